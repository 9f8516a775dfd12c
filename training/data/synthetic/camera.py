"""Pin-hole street camera: world metres -> fixed-point pixel polygons for cv2.

World frame: X to the right, Y up (0 = road surface), Z forward along the road.
Projecting real metric geometry (instead of drawing in image space) is what makes
objects scale with their distance to the horizon and occlude each other the way
a real car camera sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHIFT = 3  # cv2 fixed-point fraction bits: sub-pixel vertices keep thin far geometry stable
SCALE = 1 << SHIFT
NEAR = 0.3  # metres; nothing closer is projected (keeps coordinates finite)
_LIMIT = 1 << 26  # clamp for fixed-point coordinates, far outside any image


@dataclass(frozen=True)
class Camera:
    """A level camera `height_m` above the road, optical axis along +Z.

    `curvature` bends the whole street sideways by curvature * Z^2 metres so that
    roads are not always straight lines to the vanishing point.
    """

    width: int
    height: int
    focal: float  # pixels
    cx: float  # principal point column
    horizon: float  # image row of the horizon (principal point row)
    height_m: float
    curvature: float = 0.0

    def project(self, x, y, z) -> tuple[np.ndarray, np.ndarray]:
        """Image (column, row) of world points; arrays broadcast."""
        z = np.maximum(np.asarray(z, dtype=np.float64), NEAR)
        x = np.asarray(x, dtype=np.float64) + self.curvature * z * z
        u = self.cx + self.focal * x / z
        v = self.horizon + self.focal * (self.height_m - np.asarray(y, dtype=np.float64)) / z
        return u, v

    def ppm(self, z: float) -> float:
        """Pixels per metre of an upright object at depth z."""
        return self.focal / max(float(z), NEAR)

    def bottom_z(self) -> float:
        """Depth at which the road surface meets the bottom image row."""
        return self.focal * self.height_m / max(self.height - self.horizon, 1.0)

    def polygon(self, x, y, z) -> np.ndarray:
        """Fixed-point (N, 2) int32 polygon of world points, ready for cv2 with shift=SHIFT."""
        z = np.maximum(z, NEAR, dtype=np.float64)
        inv = (self.focal * SCALE) / z
        u = self.cx * SCALE + (x + self.curvature * z * z) * inv
        v = self.horizon * SCALE + (self.height_m - np.asarray(y, dtype=np.float64)) * inv
        if u.shape != v.shape:
            u, v = np.broadcast_arrays(u, v)
        return _pack(u, v)

    def ground_z_range(self, z_far: float) -> tuple[float, float]:
        """Depth range of the road surface worth drawing (slightly beyond the bottom row)."""
        return max(NEAR, 0.8 * self.bottom_z()), z_far


def _pack(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    pts = np.empty((u.size, 2), np.float64)
    pts[:, 0] = u.ravel()
    pts[:, 1] = v.ravel()
    np.minimum(pts, _LIMIT, out=pts)
    np.maximum(pts, -_LIMIT, out=pts)
    return np.rint(pts, out=pts).astype(np.int32)


def to_fixed(u, v) -> np.ndarray:
    """Pixel coordinates -> cv2 fixed-point int32 points (N, 2), clamped to stay representable."""
    u = np.asarray(u, dtype=np.float64) * SCALE
    v = np.asarray(v, dtype=np.float64) * SCALE
    if u.shape != v.shape:
        u, v = np.broadcast_arrays(u, v)
    return _pack(u, v)


def quads(cam: Camera, x, y, z) -> list[np.ndarray]:
    """Many 4-corner polygons at once: x, y, z broadcast to (N, 4) world coordinates."""
    x, y, z = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, z)))
    if x.size == 0:
        return []
    return list(cam.polygon(x, y, z).reshape(x.shape[0], x.shape[1], 2))
