"""German traffic signs (GTSDB classes) as small RGB sprites with exact masks.

Each class has its own outline, colours and glyph (digits, arrows, silhouettes), so
telling them apart needs shape and glyph detail, not a colour lookup: all speed limits
share the red ring and differ only in their digits, many danger signs share the red
triangle and differ only in the pictogram. Backs are plain grey plates of the same
outlines, the same grey family as poles.

A sign is drawn once on a TEMPLATE x TEMPLATE canvas with anti-aliasing and resized
to its projected size; the mask is the resized outline thresholded at one half, so
the ground truth is exactly the pixels that show the sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .colors import Color, clamp, jitter, mix

TEMPLATE = 96
_C = TEMPLATE / 2.0
_R = TEMPLATE / 2.0 - 1.0
_AA = cv2.LINE_AA
_S = 4  # fixed-point bits for template drawing
_K = 1 << _S

RED: Color = (200, 28, 36)
WHITE: Color = (240, 240, 236)
BLACK: Color = (24, 24, 26)
BLUE: Color = (18, 72, 165)
YELLOW: Color = (250, 196, 18)
GREY: Color = (140, 140, 140)

# Outline of every implemented GTSDB class id.
SIGN_SHAPE: dict[int, str] = {
    **{c: "circle" for c in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 32, 33, 34, 35, 36, 37, 38, 39)},
    **{c: "circle" for c in (40, 41, 42)},
    **{c: "triangle" for c in (11, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)},
    12: "diamond",
    13: "triangle_down",
    14: "octagon",
}
IMPLEMENTED_CLASSES: tuple[int, ...] = tuple(sorted(SIGN_SHAPE))
# Physical plate size in metres (largest dimension) per outline.
SIGN_SIZE_M: dict[str, float] = {
    "circle": 0.6,
    "triangle": 0.9,
    "triangle_down": 0.9,
    "octagon": 0.7,
    "diamond": 0.6,
}
_SPEED = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}


@dataclass(frozen=True)
class Sprite:
    rgb: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool: exactly the sign's pixels


# -- geometry helpers (unit coordinates: centre 0, radius 1, y down) ------------------------
# Glyph frame (scale, dx, dy): pictograms are designed for a disc and shrunk into triangles.
_FRAME = [1.0, 0.0, 0.0]


def _px(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) * _FRAME[0] + _FRAME[1:]
    return np.rint((p * _R + _C) * _K).astype(np.int32)


def _outline(shape: str, s: float = 1.0) -> np.ndarray:
    """Outline polygon in unit coordinates, scaled by s about the shape's centre."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape in ("triangle", "triangle_down"):
        pts = np.array([[0.0, -0.865], [1.0, 0.865], [-1.0, 0.865]])
        if shape == "triangle_down":
            pts = pts * [1, -1]
    elif shape == "octagon":
        a = np.deg2rad(22.5 + 45 * np.arange(8))
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "diamond":
        pts = np.array([[0, -1.0], [1.0, 0], [0, 1.0], [-1.0, 0]])
    else:
        raise ValueError(shape)
    centre = pts.mean(0) if shape.startswith("triangle") else 0.0
    return (pts - centre) * s + centre


def _fill(img: np.ndarray, pts, color: Color) -> None:
    cv2.fillPoly(img, [_px(pts)], color, _AA, _S)


def _line(img: np.ndarray, pts, color: Color, width: float) -> None:
    cv2.polylines(img, [_px(pts)], False, color, max(1, round(width * _FRAME[0] * _R)), _AA, _S)


def _disc(img: np.ndarray, centre, r: float, color: Color) -> None:
    c = _px(centre)[0]
    cv2.circle(img, (int(c[0]), int(c[1])), int(r * _FRAME[0] * _R * _K), color, -1, _AA, _S)


def _arrow(img: np.ndarray, pts, color: Color, width: float = 0.16, head: float = 0.32) -> None:
    """Thick polyline ending in a triangular arrow head."""
    pts = np.asarray(pts, dtype=np.float64)
    d = pts[-1] - pts[-2]
    d = d / (np.linalg.norm(d) + 1e-9)
    n = np.array([-d[1], d[0]])
    base = pts[-1] - d * head
    _line(img, np.vstack([pts[:-1], base + d * 0.02]), color, width)
    _fill(img, [pts[-1], base + n * head * 0.8, base - n * head * 0.8], color)


def _text(img: np.ndarray, text: str, color: Color, box_w: float, box_h: float, dy: float = 0.0) -> None:
    font = cv2.FONT_HERSHEY_DUPLEX
    thick = max(1, int(_R * 0.09))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    sc = min(box_w * _R / tw, box_h * _R / th)
    (tw, th), _ = cv2.getTextSize(text, font, sc, thick)
    org = (int(_C - tw / 2), int(_C + th / 2 + dy * _R))
    cv2.putText(img, text, org, font, sc, color, thick, _AA)


# -- pictograms ----------------------------------------------------------------------------
def _car(img, cx: float, cy: float, s: float, color: Color) -> None:
    """Car seen from behind (as on overtaking signs)."""
    _fill(
        img, [[cx - 0.3 * s, cy], [cx + 0.3 * s, cy], [cx + 0.3 * s, cy + 0.3 * s], [cx - 0.3 * s, cy + 0.3 * s]], color
    )
    _fill(
        img,
        [[cx - 0.2 * s, cy - 0.25 * s], [cx + 0.2 * s, cy - 0.25 * s], [cx + 0.27 * s, cy], [cx - 0.27 * s, cy]],
        color,
    )
    _fill(
        img,
        [
            [cx - 0.28 * s, cy + 0.3 * s],
            [cx - 0.16 * s, cy + 0.3 * s],
            [cx - 0.16 * s, cy + 0.42 * s],
            [cx - 0.28 * s, cy + 0.42 * s],
        ],
        color,
    )
    _fill(
        img,
        [
            [cx + 0.16 * s, cy + 0.3 * s],
            [cx + 0.28 * s, cy + 0.3 * s],
            [cx + 0.28 * s, cy + 0.42 * s],
            [cx + 0.16 * s, cy + 0.42 * s],
        ],
        color,
    )


def _truck(img, cx: float, cy: float, s: float, color: Color) -> None:
    """Truck side view: cargo box and cab."""
    _fill(
        img,
        [
            [cx - 0.45 * s, cy - 0.3 * s],
            [cx + 0.15 * s, cy - 0.3 * s],
            [cx + 0.15 * s, cy + 0.15 * s],
            [cx - 0.45 * s, cy + 0.15 * s],
        ],
        color,
    )
    _fill(
        img,
        [
            [cx + 0.18 * s, cy - 0.12 * s],
            [cx + 0.36 * s, cy - 0.12 * s],
            [cx + 0.45 * s, cy + 0.02 * s],
            [cx + 0.45 * s, cy + 0.15 * s],
            [cx + 0.18 * s, cy + 0.15 * s],
        ],
        color,
    )
    for wx in (-0.3, 0.0, 0.33):
        _disc(img, [cx + wx * s, cy + 0.2 * s], 0.08 * s, color)


def _walker(img, cx: float, cy: float, s: float, color: Color, lean: float = 0.0) -> None:
    _disc(img, [cx + lean * 0.3 * s, cy - 0.42 * s], 0.09 * s, color)
    w = 0.09
    _line(img, [[cx + lean * 0.3 * s, cy - 0.3 * s], [cx, cy + 0.05 * s]], color, w * s)
    _line(img, [[cx, cy + 0.05 * s], [cx - 0.18 * s, cy + 0.45 * s]], color, w * s)
    _line(img, [[cx, cy + 0.05 * s], [cx + 0.16 * s, cy + 0.45 * s]], color, w * s)
    _line(
        img,
        [[cx - 0.2 * s, cy - 0.05 * s], [cx + lean * 0.3 * s, cy - 0.25 * s], [cx + 0.22 * s, cy]],
        color,
        w * 0.8 * s,
    )


def _bicycle(img, cx: float, cy: float, s: float, color: Color) -> None:
    for wx in (-0.3, 0.3):
        c = _px([cx + wx * s, cy + 0.15 * s])[0]
        r, t = int(0.18 * s * _FRAME[0] * _R * _K), max(1, int(0.05 * s * _FRAME[0] * _R))
        cv2.circle(img, (int(c[0]), int(c[1])), r, color, t, _AA, _S)
    _line(
        img,
        [
            [cx - 0.3 * s, cy + 0.15 * s],
            [cx - 0.05 * s, cy - 0.12 * s],
            [cx + 0.22 * s, cy - 0.12 * s],
            [cx + 0.3 * s, cy + 0.15 * s],
        ],
        color,
        0.05 * s,
    )
    _line(img, [[cx - 0.05 * s, cy - 0.12 * s], [cx, cy + 0.15 * s], [cx + 0.22 * s, cy - 0.12 * s]], color, 0.05 * s)


def _stripes(img, color: Color, n: int = 5) -> None:
    for k in np.linspace(-0.45, 0.45, n):
        _line(img, [[0.62 + k, -0.62 + k], [-0.62 + k, 0.62 + k]], color, 0.035)


def _glyph(img: np.ndarray, cls: int, ink: Color, red: Color) -> None:
    """The pictogram inside the sign (unit coordinates, on the sign's white or blue field)."""
    if cls in _SPEED:
        _text(img, _SPEED[cls], ink, 1.15 if len(_SPEED[cls]) == 3 else 0.95, 0.62)
    elif cls == 6:
        _text(img, "80", GREY, 0.95, 0.62)
        _stripes(img, ink)
    elif cls == 9:
        _car(img, -0.32, -0.12, 0.85, red)
        _car(img, 0.32, -0.12, 0.85, ink)
    elif cls == 10:
        _truck(img, -0.3, -0.02, 0.7, red)
        _car(img, 0.36, -0.12, 0.75, ink)
    elif cls == 16:
        _truck(img, 0.0, 0.0, 1.1, ink)
    elif cls == 17:
        _fill(img, [[-0.68, -0.17], [0.68, -0.17], [0.68, 0.17], [-0.68, 0.17]], WHITE)
    elif cls == 32:
        _stripes(img, ink)
    elif cls == 41:
        _car(img, -0.32, -0.12, 0.8, GREY)
        _car(img, 0.32, -0.12, 0.8, GREY)
        _stripes(img, ink)
    elif cls == 42:
        _truck(img, -0.25, -0.02, 0.7, GREY)
        _car(img, 0.38, -0.12, 0.7, GREY)
        _stripes(img, ink)
    elif cls == 11:
        _line(img, [[0, -0.45], [0, 0.55]], ink, 0.2)
        _line(img, [[-0.4, 0.05], [0.4, 0.05]], ink, 0.11)
    elif cls == 18:
        _line(img, [[0, -0.35], [0, 0.22]], ink, 0.17)
        _disc(img, [0, 0.43], 0.1, ink)
    elif cls in (19, 20):
        m = -1 if cls == 19 else 1
        _arrow(img, [[0.15 * m, 0.55], [0.15 * m, 0.05], [0.0, -0.15], [-0.3 * m, -0.25]], ink, 0.13, 0.25)
    elif cls == 21:
        _arrow(img, [[0.2, 0.55], [0.2, 0.3], [-0.2, 0.1], [-0.2, -0.1], [0.15, -0.3], [0.15, -0.35]], ink, 0.12, 0.22)
    elif cls == 22:
        xs = np.linspace(-0.6, 0.6, 25)
        ys = 0.38 - 0.18 * np.abs(np.sin(xs * np.pi * 1.65))
        _line(img, np.stack([xs, ys], 1), ink, 0.12)
    elif cls == 23:
        _car(img, 0.0, -0.25, 0.8, ink)
        for m in (-1, 1):
            ys = np.linspace(0.15, 0.55, 12)
            _line(img, np.stack([m * 0.2 + 0.08 * np.sin(ys * 14), ys], 1), ink, 0.06)
    elif cls == 24:
        _line(img, [[-0.2, -0.35], [-0.2, 0.55]], ink, 0.1)
        _line(img, [[0.1, -0.35], [0.1, 0.1], [0.3, 0.3], [0.3, 0.55]], ink, 0.1)
    elif cls == 25:
        _walker(img, -0.05, 0.1, 0.9, ink, lean=0.8)
        _line(img, [[0.15, -0.05], [0.35, 0.45]], ink, 0.06)
        _fill(img, [[0.3, 0.55], [0.55, 0.55], [0.45, 0.35]], ink)
    elif cls == 26:
        for dy, col in ((-0.3, (220, 30, 30)), (0.05, (250, 190, 20)), (0.4, (30, 160, 60))):
            _disc(img, [0, dy], 0.14, col)
    elif cls == 27:
        _walker(img, 0.0, 0.1, 1.0, ink)
    elif cls == 28:
        _walker(img, -0.18, 0.15, 0.8, ink)
        _walker(img, 0.2, 0.2, 0.65, ink)
    elif cls == 29:
        _bicycle(img, 0.0, 0.15, 1.0, ink)
    elif cls == 30:
        for a in (0, 60, 120):
            t = np.deg2rad(a)
            d = np.array([np.sin(t), np.cos(t)]) * 0.42
            _line(img, [[-d[0], 0.1 - d[1]], [d[0], 0.1 + d[1]]], ink, 0.07)
    elif cls == 31:
        _fill(
            img,
            [
                [-0.45, 0.0],
                [0.2, -0.05],
                [0.3, -0.3],
                [0.5, -0.35],
                [0.45, -0.2],
                [0.35, 0.05],
                [0.3, 0.5],
                [0.2, 0.5],
                [0.15, 0.15],
                [-0.3, 0.15],
                [-0.35, 0.5],
                [-0.45, 0.5],
            ],
            ink,
        )
        _line(img, [[0.35, -0.32], [0.3, -0.55], [0.2, -0.6]], ink, 0.05)
    elif cls in (33, 34):
        m = 1 if cls == 33 else -1
        _arrow(img, [[-0.15 * m, 0.6], [-0.15 * m, 0.0], [0.0, -0.15], [0.6 * m, -0.15]], WHITE, 0.2, 0.34)
    elif cls == 35:
        _arrow(img, [[0, 0.65], [0, -0.65]], WHITE, 0.22, 0.36)
    elif cls in (36, 37):
        m = 1 if cls == 36 else -1
        _arrow(img, [[-0.1 * m, 0.65], [-0.1 * m, -0.65]], WHITE, 0.18, 0.3)
        _arrow(img, [[-0.1 * m, 0.2], [0.05 * m, 0.0], [0.6 * m, 0.0]], WHITE, 0.16, 0.28)
    elif cls in (38, 39):
        m = 1 if cls == 38 else -1
        _arrow(img, [[-0.42 * m, -0.42], [0.45 * m, 0.45]], WHITE, 0.2, 0.36)
    elif cls == 40:
        for k in range(3):
            a0 = k * 120 + 15
            a = np.deg2rad(np.linspace(a0, a0 + 85, 10))
            _arrow(img, np.stack([np.cos(a) * 0.45, -np.sin(a) * 0.45], 1), WHITE, 0.14, 0.24)
    elif cls not in (13, 14, 15, 12):
        raise ValueError(f"GTSDB class {cls} has no glyph")


def _sign_template(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Full-resolution anti-aliased drawing of the sign face (background = rim colour)."""
    shape = SIGN_SHAPE[cls]
    fade = rng.uniform(0.0, 0.25)
    red = mix(jitter(rng, RED, 0.05), (170, 150, 150), fade)
    white = jitter(rng, WHITE, 0.03)
    ink = jitter(rng, BLACK, 0.02)
    blue = mix(jitter(rng, BLUE, 0.05), (120, 130, 150), fade)
    img = np.empty((TEMPLATE, TEMPLATE, 3), np.uint8)
    img[:] = white
    if cls == 12:
        _fill(img, _outline(shape, 0.9), ink)
        _fill(img, _outline(shape, 0.85), white)
        _fill(img, _outline(shape, 0.58), mix(jitter(rng, YELLOW, 0.05), (200, 180, 120), fade))
    elif cls == 14:
        img[:] = red
        _fill(img, _outline(shape, 0.94), white)
        _fill(img, _outline(shape, 0.88), red)
        _text(img, "STOP", white, 1.3, 0.45)
    elif cls == 17:
        _fill(img, _outline(shape, 0.96), red)
        _glyph(img, cls, ink, red)
    elif 33 <= cls <= 40:
        _fill(img, _outline(shape, 0.96), blue)
        _glyph(img, cls, ink, red)
    elif cls in (6, 32, 41, 42):
        _fill(img, _outline(shape, 0.96), (200, 200, 200))
        _fill(img, _outline(shape, 0.9), white)
        _glyph(img, cls, ink, red)
    elif shape in ("triangle", "triangle_down"):
        _fill(img, _outline(shape, 0.95), red)
        _fill(img, _outline(shape, 0.7), white)
        if cls != 13:
            _FRAME[:] = [0.5, 0.0, 0.22]
            try:
                _glyph(img, cls, ink, red)
            finally:
                _FRAME[:] = [1.0, 0.0, 0.0]
    else:  # red-ringed prohibitory disc
        _fill(img, _outline(shape, 0.95), red)
        _fill(img, _outline(shape, 0.74), white)
        if cls != 15:
            _glyph(img, cls, ink, red)
    # Dirt / uneven lighting over the face.
    grad = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.05), TEMPLATE, dtype=np.float32)
    return np.clip(img * grad[:, None, None], 0, 255).astype(np.uint8)


def _shape_mask(shape: str) -> np.ndarray:
    m = np.zeros((TEMPLATE, TEMPLATE), np.uint8)
    cv2.fillPoly(m, [_px(_outline(shape))], 255, _AA, _S)
    return m


_MASKS = {shape: _shape_mask(shape) for shape in SIGN_SIZE_M}


def _extent(mask: np.ndarray) -> tuple[float, float]:
    cols, rows = np.flatnonzero(mask.max(0) >= 128), np.flatnonzero(mask.max(1) >= 128)
    return float(cols[-1] - cols[0] + 1) / TEMPLATE, float(rows[-1] - rows[0] + 1) / TEMPLATE


# (width, height) of each outline as a fraction of its sprite: a triangle is less tall than wide.
SHAPE_EXTENT: dict[str, tuple[float, float]] = {shape: _extent(m) for shape, m in _MASKS.items()}


def sprite_size(shape: str, box_px: float, squeeze: float = 1.0) -> float:
    """Sprite height (``sign_front``'s ``size_px``) whose sign box is ``box_px`` on its longer side."""
    w, h = SHAPE_EXTENT[shape]
    return box_px / max(h, w * squeeze)


def _to_size(template: np.ndarray, shape: str, width: int, height: int) -> Sprite:
    rgb = cv2.resize(template, (width, height), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(_MASKS[shape], (width, height), interpolation=cv2.INTER_AREA)
    mask = alpha >= 128
    if not mask.any():  # a sign of a pixel or two: keep its centre pixel
        mask[height // 2, width // 2] = True
    return Sprite(rgb, mask)


def sign_front(cls: int, size_px: float, rng: np.random.Generator, squeeze: float = 1.0) -> Sprite:
    """Sprite of GTSDB class `cls`, `size_px` tall, `squeeze` narrower when seen at an angle."""
    w = max(1, round(size_px * squeeze))
    h = max(1, round(size_px))
    return _to_size(_sign_template(cls, rng), SIGN_SHAPE[cls], w, h)


def sign_back(shape: str, size_px: float, rng: np.random.Generator, squeeze: float = 1.0) -> Sprite:
    """Back of a sign: galvanised grey plate of the outline with a darker mounting rail."""
    g = rng.uniform(125, 200)
    plate = clamp(g + rng.uniform(-5, 5, 3))
    img = np.empty((TEMPLATE, TEMPLATE, 3), np.uint8)
    img[:] = plate
    _fill(img, _outline(shape, 0.9), jitter(rng, plate, 0.03))
    rail = mix(plate, (60, 60, 60), rng.uniform(0.2, 0.5))
    for y in (-0.25, 0.25) if rng.random() < 0.6 else (0.0,):
        _fill(img, [[-0.8, y - 0.07], [0.8, y - 0.07], [0.8, y + 0.07], [-0.8, y + 0.07]], rail)
    w = max(1, round(size_px * squeeze))
    h = max(1, round(size_px))
    return _to_size(img, shape, w, h)
