"""Photometric side of a scene: sky, surface texture, lighting and the camera's colour grading.

Texture amplitude depends on the class (grainy asphalt, leafy vegetation, smooth sky) but
never its mean colour, and exposure / white balance / gamma change per image, so a
network has to use structure rather than memorise colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.readers.label_tables import VISTAS_V12_LABELS

from . import colors
from .canvas import Canvas
from .context import L
from .domains import DomainStyle

_N = len(VISTAS_V12_LABELS)


def _lut(default: float, **by_name: float) -> np.ndarray:
    lut = np.full(_N, default, np.float32)
    for name, value in by_name.items():
        lut[L[name.replace("__", "--").replace("_", "-")]] = value
    return lut


# Noise amplitudes (0..255 units) per label: coarse blotches, medium grain, per-pixel grain.
_COARSE = _lut(
    4.0,
    nature__sky=3.0,
    construction__flat__road=8.0,
    nature__terrain=12.0,
    nature__vegetation=14.0,
    construction__structure__building=7.0,
    construction__flat__sidewalk=8.0,
)
_MEDIUM = _lut(
    3.0,
    nature__sky=0.5,
    construction__flat__road=5.0,
    nature__vegetation=22.0,
    nature__terrain=10.0,
    construction__flat__sidewalk=4.0,
    object__traffic_sign__front=1.0,
)
_FINE = _lut(
    3.0,
    nature__sky=0.8,
    construction__flat__road=9.0,
    nature__vegetation=12.0,
    nature__terrain=9.0,
    construction__flat__sidewalk=6.0,
    construction__flat__service_lane=9.0,
    construction__flat__parking=10.0,
    construction__flat__bike_lane=8.0,
    object__traffic_sign__front=1.5,
)


def paint_sky(canvas: Canvas, horizon: float, rng: np.random.Generator) -> colors.Color:
    """Fill the whole canvas with sky (gradient + clouds); returns the haze colour at the horizon."""
    h, w = canvas.height, canvas.width
    if rng.random() < 0.6:
        top = colors.hsv(rng, (0.55, 0.62), (0.35, 0.7), (0.6, 0.9))
        bottom = colors.mix(top, (235, 240, 245), rng.uniform(0.5, 0.8))
        cloud_amount = rng.uniform(0.0, 0.6)
    else:
        top = colors.grey(rng, 140, 200, 6)
        bottom = colors.mix(top, (230, 232, 235), rng.uniform(0.2, 0.5))
        cloud_amount = rng.uniform(0.2, 0.5)
    white = np.float32(rng.uniform(215, 250))
    cells = rng.standard_normal((max(h // 24, 2) + 1, max(w // 24, 2) + 1), dtype=np.float32)
    rows = int(min(h, max(horizon, 1.0) * 1.1 + 4))  # below that the ground always covers the sky
    t = np.clip(np.arange(rows, dtype=np.float32) / max(horizon, 1.0), 0, 1)[:, None]
    gradient = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t  # (rows, 3)
    clouds = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)[:rows]
    clouds = cv2.GaussianBlur(clouds, (0, 0), max(w / 120.0, 0.5))  # soft, not blocky, edges
    cover = np.clip((clouds - np.float32(1.0 - cloud_amount * 2)) * np.float32(0.6), 0, 0.9)[..., None]
    sky = gradient[:, None, :] + (white - gradient[:, None, :]) * cover
    canvas.image[:rows] = sky.astype(np.uint8)
    canvas.image[rows:] = bottom
    canvas.labels[:] = L["nature--sky"]
    return bottom


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((h // cell + 2, w // cell + 2), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if cell > 1 else small[:h, :w]


def develop(canvas: Canvas, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """Texture, exposure, white balance, saturation, gamma, vignette, optics blur, sensor noise."""
    h, w = canvas.height, canvas.width
    lab = canvas.labels
    grain = _COARSE[lab] * _noise(rng, h, w, max(w // 24, 2))
    grain += _MEDIUM[lab] * _noise(rng, h, w, 3)
    grain += _FINE[lab] * _noise(rng, h, w, 1)
    # Exposure with a soft vertical gradient and a vignette, folded into one gain map.
    gain = rng.uniform(*style.gain)
    rows = np.linspace(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), h, dtype=np.float32)[:, None]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gain_map = (gain * (1.0 + rows)) * (1.0 - np.float32(rng.uniform(*style.vignette) / 2) * (xx * xx + yy * yy))
    wb = 1.0 + rng.uniform(-style.tint, style.tint, 3) + np.array([style.warmth, 0.0, -style.warmth])
    img = canvas.image.astype(np.float32)
    img += grain[..., None]
    img *= gain_map[..., None]
    img *= wb.astype(np.float32)
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
    img -= luma
    img *= np.float32(rng.uniform(*style.saturation))
    img += luma
    out = np.clip(img, 0, 255).astype(np.uint8)
    gamma = rng.uniform(*style.gamma)
    curve = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    out = cv2.LUT(out, curve)
    sigma = rng.uniform(*style.blur) * h / 512.0
    if sigma > 0.25:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(*style.noise))
    out16 = out.astype(np.int16)
    out16 += np.rint(noise).astype(np.int16)[..., None]
    return np.clip(out16, 0, 255).astype(np.uint8)
