"""Colour sampling: every instance gets its own colour so that colour alone never names a class."""

from __future__ import annotations

import colorsys

import numpy as np

Color = tuple[int, int, int]

# Typical car paints (RGB); a sampled paint is jittered further per instance.
CAR_PAINTS: tuple[Color, ...] = (
    (235, 235, 235),
    (20, 20, 22),
    (160, 162, 166),
    (95, 98, 104),
    (30, 45, 110),
    (150, 20, 25),
    (40, 70, 50),
    (200, 190, 160),
    (90, 30, 30),
    (60, 110, 170),
    (210, 120, 30),
    (120, 120, 60),
)
SKIN_TONES: tuple[Color, ...] = (
    (255, 219, 172),
    (241, 194, 125),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (94, 58, 30),
)
HAIR: tuple[Color, ...] = ((20, 15, 10), (60, 40, 25), (110, 75, 40), (200, 170, 110), (140, 140, 140))


def clamp(c) -> Color:
    r, g, b = (float(v) for v in c)
    return (min(max(int(r + 0.5), 0), 255), min(max(int(g + 0.5), 0), 255), min(max(int(b + 0.5), 0), 255))


def jitter(rng: np.random.Generator, base: Color, amount: float = 0.08) -> Color:
    """Per-channel and overall brightness jitter of `base` (amount ~ fraction of 255)."""
    bright = 1.0 + rng.uniform(-amount, amount) * 2.0
    return clamp(np.asarray(base) * bright + rng.uniform(-amount, amount, 3) * 255)


def scale(color: Color, factor: float) -> Color:
    return clamp([x * factor for x in color])


def mix(a: Color, b: Color, t: float) -> Color:
    return clamp([x * (1.0 - t) + y * t for x, y in zip(a, b, strict=True)])


def hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]) -> Color:
    """Random colour from hue/saturation/value ranges (hue in [0, 1), wraps)."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v))
    return clamp(np.asarray(rgb) * 255)


def grey(rng: np.random.Generator, lo: int, hi: int, tint: float = 6) -> Color:
    g = rng.uniform(lo, hi)
    return clamp(g + rng.uniform(-tint, tint, 3))


def clothing(rng: np.random.Generator) -> Color:
    """Clothes: mostly dull, sometimes vivid; the same sampler serves persons and riders."""
    if rng.random() < 0.6:
        return hsv(rng, (0, 1), (0.0, 0.35), (0.08, 0.75))
    return hsv(rng, (0, 1), (0.4, 0.9), (0.3, 0.95))


def pick(rng: np.random.Generator, options: tuple[Color, ...], amount: float = 0.05) -> Color:
    return jitter(rng, options[int(rng.integers(len(options)))], amount)
