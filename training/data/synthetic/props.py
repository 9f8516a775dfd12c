"""Street furniture: trees, poles carrying signs, sign frames, traffic lights.

Drawing order encodes how real assemblies occlude: a sign facing the camera hides its
pole, while from behind the pole runs in front of the sign's grey back; the grey of
backs, poles and frames overlaps on purpose, only shape and context separate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import colors
from .context import DrawContext, L
from .signs import SHAPE_EXTENT, SIGN_SHAPE, SIGN_SIZE_M, sign_back, sign_front, sprite_size

POLE = L["object--support--pole"]
FRAME = L["object--support--traffic-sign-frame"]
FRONT = L["object--traffic-sign--front"]
BACK = L["object--traffic-sign--back"]
LIGHT = L["object--traffic-light"]
VEGETATION = L["nature--vegetation"]
MIN_SIGN_PX = 3.0  # smaller signs are not drawn at all (they would be unlabelled noise)


@dataclass(frozen=True)
class SignSpec:
    gtsdb_class: int  # for a back, only its outline matters
    facing: bool  # True: front towards the camera
    box_px: float | None = None  # longer side of its box in pixels (then the plate fits the depth), else metric


def sign_height_m(spec: SignSpec, ppm: float) -> float:
    """Upper bound of the sprite's height in metres (where a post stacks the next sign)."""
    shape = SIGN_SHAPE[spec.gtsdb_class]
    if spec.box_px is None:
        return SIGN_SIZE_M[shape]
    return spec.box_px / SHAPE_EXTENT[shape][1] / ppm


def stack_centres(signs: list[SignSpec], top: float, ppm: float) -> list[float]:
    """Heights of the centres of signs stacked downwards from ``top`` on one post, 0.1 m apart."""
    centres, y = [], top
    for s in signs:
        size = sign_height_m(s, ppm)
        centres.append(y - size / 2)
        y -= size + 0.1
    return centres


def draw_tree(ctx: DrawContext, x: float, z: float, y_base: float) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    h = rng.uniform(4.0, 11.0)
    trunk = ctx.tone(colors.hsv(rng, (0.05, 0.1), (0.2, 0.45), (0.2, 0.4)), z)
    r = rng.uniform(0.1, 0.2)
    canvas.fill([ctx.front(x - r, x + r, y_base, y_base + h * 0.55, z)], trunk, VEGETATION)
    base = colors.hsv(rng, (0.17, 0.33), (0.35, 0.8), (0.2, 0.5))
    crown_r = rng.uniform(1.2, 2.8)
    for shade in (0.75, 1.0, 1.2):
        polys = [
            ctx.blob(
                x + rng.uniform(-0.6, 0.6) * crown_r,
                y_base + h * rng.uniform(0.6, 0.85),
                z,
                crown_r * rng.uniform(0.5, 0.8),
                crown_r * rng.uniform(0.45, 0.75),
                0.2,
            )
            for _ in range(int(rng.integers(2, 4)))
        ]
        canvas.fill(polys, ctx.tone(colors.scale(base, shade), z), VEGETATION)


def _pole_color(ctx: DrawContext) -> colors.Color:
    rng = ctx.rng
    if rng.random() < 0.7:
        return colors.grey(rng, 110, 200, 5)  # galvanised, like sign backs
    return colors.pick(rng, ((40, 60, 45), (45, 45, 50), (200, 200, 195)))


def _pole(ctx: DrawContext, x: float, z: float, y0: float, y1: float, r: float, color) -> int:
    iid = ctx.canvas.begin(POLE)
    ctx.canvas.fill([ctx.front(x - r, x + r, y0, y1, z)], ctx.tone(color, z), POLE, iid)
    ctx.canvas.end(iid)
    return iid


def _draw_sign(ctx: DrawContext, spec: SignSpec, x: float, y: float, z: float) -> float:
    """Draw one sign centred at (x, y, z); returns its height in metres (0 if too small)."""
    shape = SIGN_SHAPE[spec.gtsdb_class]
    if spec.box_px is None:
        size_m = SIGN_SIZE_M[shape] * ctx.rng.uniform(0.9, 1.1)
        size_px = size_m * ctx.camera.ppm(z)
        if size_px < MIN_SIGN_PX:
            return 0.0
        squeeze = ctx.rng.uniform(0.75, 1.0)
    else:
        squeeze = ctx.rng.uniform(0.75, 1.0)
        size_px = sprite_size(shape, spec.box_px, squeeze)
        size_m = size_px / ctx.camera.ppm(z)
    if spec.facing:
        sprite = sign_front(spec.gtsdb_class, size_px, ctx.rng, squeeze)
        iid = ctx.canvas.begin(FRONT, gtsdb_class=spec.gtsdb_class)
        label = FRONT
    else:
        sprite = sign_back(shape, size_px, ctx.rng, squeeze)
        iid = ctx.canvas.begin(BACK)
        label = BACK
    u, v = ctx.camera.project(x, y, z)
    h, w = sprite.mask.shape
    haze = 1.0 - float(np.exp(-z / ctx.haze_distance))
    rgb = (sprite.rgb * (1.0 - haze) + np.asarray(ctx.haze_color) * haze).astype(np.uint8)
    ctx.canvas.paste(round(float(u) - w / 2), round(float(v) - h / 2), rgb, sprite.mask, label, iid)
    ctx.canvas.end(iid)
    return size_m


def draw_sign_post(
    ctx: DrawContext, x: float, z: float, y_base: float, signs: list[SignSpec], top: float | None = None
) -> None:
    """One pole with signs stacked from ``top`` (random if not given): backs behind the pole, fronts before it."""
    rng = ctx.rng
    if top is None:
        top = y_base + rng.uniform(2.6, 3.4)
    color = _pole_color(ctx)
    r = rng.uniform(0.03, 0.05)
    heights = stack_centres(signs, top, ctx.camera.ppm(z))
    for s, yc in zip(signs, heights, strict=True):
        if not s.facing:
            _draw_sign(ctx, s, x, yc, z + 0.02)
    _pole(ctx, x, z, y_base, top + 0.1, r, color)
    for s, yc in zip(signs, heights, strict=True):
        if s.facing:
            _draw_sign(ctx, s, x, yc, z - 0.02)


def draw_sign_frame(ctx: DrawContext, x: float, z: float, y_base: float, signs: list[SignSpec]) -> None:
    """Two thin posts with cross bars holding signs side by side (traffic-sign-frame)."""
    rng, canvas = ctx.rng, ctx.canvas
    sizes = [SIGN_SIZE_M[SIGN_SHAPE[s.gtsdb_class]] for s in signs]
    width = sum(sizes) + 0.15 * (len(signs) + 1)
    y1 = y_base + rng.uniform(2.3, 3.0)
    y0 = y1 - max(sizes) - 0.2
    metal = ctx.tone(_pole_color(ctx), z)
    r = 0.025

    def frame() -> None:
        iid = canvas.begin(FRAME)
        polys = [
            ctx.front(x - width / 2 - r, x - width / 2 + r, y_base, y1 + 0.05, z),
            ctx.front(x + width / 2 - r, x + width / 2 + r, y_base, y1 + 0.05, z),
            ctx.front(x - width / 2, x + width / 2, y1 - 0.04, y1, z),
            ctx.front(x - width / 2, x + width / 2, y0, y0 + 0.04, z),
        ]
        canvas.fill(polys, metal, FRAME, iid)
        canvas.end(iid)

    centres, cx = [], x - width / 2 + 0.15
    for size in sizes:
        centres.append(cx + size / 2)
        cx += size + 0.15
    yc = 0.5 * (y0 + y1)
    facing = signs[0].facing
    if facing:
        frame()
    for s, xc in zip(signs, centres, strict=True):
        _draw_sign(ctx, SignSpec(s.gtsdb_class, facing), xc, yc, z - 0.02 if facing else z + 0.02)
    if not facing:
        frame()


def draw_traffic_light(
    ctx: DrawContext, x: float, z: float, y_base: float, facing: bool, arm_to: float | None = None
) -> None:
    """Traffic light on a pole, optionally a second head on a mast arm over the road."""
    rng, canvas = ctx.rng, ctx.canvas
    color = _pole_color(ctx)
    top = y_base + (rng.uniform(5.0, 6.0) if arm_to is not None else rng.uniform(2.8, 3.4))
    pid = canvas.begin(POLE)
    polys = [ctx.front(x - 0.06, x + 0.06, y_base, top, z)]
    if arm_to is not None:
        lo, hi = sorted((x, arm_to))
        polys.append(ctx.front(lo, hi, top - 0.15, top - 0.05, z))
    canvas.fill(polys, ctx.tone(color, z), POLE, pid)
    canvas.end(pid)
    housing = ctx.tone(colors.pick(rng, ((25, 25, 25), (45, 55, 45), (200, 170, 30))), z)
    lit = int(rng.integers(3))
    heads = [(x, y_base + rng.uniform(2.1, 2.5))]
    if arm_to is not None:
        heads.append((arm_to, top - 1.1))
    for hx, hy in heads:
        iid = canvas.begin(LIGHT)
        canvas.fill([ctx.front(hx - 0.16, hx + 0.16, hy, hy + 0.9, z - 0.05)], housing, LIGHT, iid)
        if facing:
            lamps = ((235, 35, 30), (245, 180, 20), (40, 230, 120))
            for k, col in enumerate(lamps):
                c = col if k == lit else colors.scale(col, 0.25)
                canvas.fill([ctx.blob(hx, hy + 0.75 - 0.28 * k, z - 0.08, 0.09, 0.09)], ctx.tone(c, z), LIGHT, iid)
        else:
            canvas.fill(
                [ctx.front(hx - 0.22, hx + 0.22, hy - 0.05, hy + 0.95, z - 0.02)],
                colors.scale(housing, 0.8),
                LIGHT,
                iid,
            )
        canvas.end(iid)
