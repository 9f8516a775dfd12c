"""What every drawing routine needs: canvas, camera, random stream and atmosphere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.readers.label_tables import VISTAS_V12_ID

from .camera import Camera, quads, to_fixed
from .canvas import Canvas
from .colors import Color, mix

L = VISTAS_V12_ID  # short alias: label id by Vistas name
_ANGLES = np.linspace(0, 2 * np.pi, 20, endpoint=False)
_COS, _SIN = np.cos(_ANGLES), np.sin(_ANGLES)


@dataclass
class DrawContext:
    canvas: Canvas
    camera: Camera
    rng: np.random.Generator
    haze_color: Color
    haze_distance: float  # metres at which ~63 % of a colour is haze

    def tone(self, color: Color, z: float) -> Color:
        """Aerial perspective: far things fade toward the haze colour."""
        return mix(color, self.haze_color, float(1.0 - np.exp(-max(z, 0.0) / self.haze_distance)))

    def _zs(self, z0: float, z1: float, n: int) -> np.ndarray:
        """Depth samples along a long edge: enough that a curved street bends smoothly."""
        if n <= 0:
            n = 2 if self.camera.curvature == 0.0 else int(np.clip(np.log2(z1 / max(z0, 0.3)) * 4, 2, 24))
        if n == 2:
            return np.array([max(z0, 0.3), max(z1, 0.31)])
        return np.geomspace(max(z0, 0.3), max(z1, 0.31), n)

    def ground(self, x0: float, x1: float, z0: float, z1: float, y: float = 0.0, n: int = 0) -> np.ndarray:
        """Horizontal quad x0..x1, z0..z1 at height y, sampled along Z so curved streets bend."""
        zs = self._zs(z0, z1, n)
        n = zs.size
        xs = np.concatenate([np.full(n, x0), np.full(n, x1)])
        return self.camera.polygon(xs, y, np.concatenate([zs, zs[::-1]]))

    def wall(self, x: float, z0: float, z1: float, y0: float, y1: float, n: int = 0) -> np.ndarray:
        """Vertical quad in the plane X = x (a facade parallel to the street)."""
        zs = self._zs(z0, z1, n)
        n = zs.size
        ys = np.concatenate([np.full(n, y0), np.full(n, y1)])
        return self.camera.polygon(x, ys, np.concatenate([zs, zs[::-1]]))

    def ground_quads(self, x0, x1, z0, z1, y: float = 0.0) -> list[np.ndarray]:
        """Many short horizontal quads (markings, stripes) in one projection."""
        x0, x1, z0, z1 = (np.atleast_1d(np.asarray(a, np.float64))[:, None] for a in (x0, x1, z0, z1))
        x0, x1, z0, z1 = np.broadcast_arrays(x0, x1, z0, z1)
        return quads(self.camera, np.hstack([x0, x1, x1, x0]), y, np.hstack([z0, z0, z1, z1]))

    def wall_quads(self, x: float, z0, z1, y0, y1) -> list[np.ndarray]:
        """Many small vertical quads in the plane X = x (windows)."""
        z0, z1, y0, y1 = (np.atleast_1d(np.asarray(a, np.float64))[:, None] for a in (z0, z1, y0, y1))
        z0, z1, y0, y1 = np.broadcast_arrays(z0, z1, y0, y1)
        return quads(self.camera, x, np.hstack([y0, y0, y1, y1]), np.hstack([z0, z1, z1, z0]))

    def front_quads(self, x0, x1, y0, y1, z) -> list[np.ndarray]:
        """Many small quads facing the camera (windows of a far building)."""
        x0, x1, y0, y1, z = (np.atleast_1d(np.asarray(a, np.float64))[:, None] for a in (x0, x1, y0, y1, z))
        x0, x1, y0, y1, z = np.broadcast_arrays(x0, x1, y0, y1, z)
        return quads(self.camera, np.hstack([x0, x1, x1, x0]), np.hstack([y0, y0, y1, y1]), z)

    def front(self, x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
        """Vertical quad facing the camera at depth z."""
        return self.camera.polygon([x0, x1, x1, x0], [y0, y0, y1, y1], z)

    def quad(self, pts3d) -> np.ndarray:
        p = np.asarray(pts3d, dtype=np.float64)
        return self.camera.polygon(p[:, 0], p[:, 1], p[:, 2])

    def blob(self, x: float, y: float, z: float, rx: float, ry: float, wobble: float = 0.0) -> np.ndarray:
        """Upright ellipse (optionally ragged) of radii rx, ry metres centred at (x, y, z)."""
        r = 1.0 + (self.rng.uniform(-wobble, wobble, _COS.size) if wobble else 0.0)
        u, v = self.camera.project(x, y, z)
        s = self.camera.ppm(z)
        return to_fixed(u + _COS * (rx * s) * r, v - _SIN * (ry * s) * r)

    def ground_blob(self, x: float, z: float, rx: float, rz: float, wobble: float = 0.0, y: float = 0.0):
        """Ellipse lying on the road (manholes, potholes)."""
        r = 1.0 + (self.rng.uniform(-wobble, wobble, _COS.size) if wobble else 0.0)
        return self.camera.polygon(x + _COS * rx * r, y, z + _SIN * rz * r)


def ellipse_poly(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    """Pixel-space ellipse as a fixed-point polygon."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return to_fixed(cx + np.cos(a) * rx, cy + np.sin(a) * ry)
