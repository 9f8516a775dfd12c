"""Sign posts of the GTSDB domain: each sign's box size is drawn first, then its post is placed to fit.

Posts at random depths along a street give mostly far, tiny signs, where the real benchmark boxes
signs of 16-128 px. Here the size comes from the domain's :class:`~.sign_boxes.SignBoxes` and the
depth from the size (z = focal * plate / size, the plate -20 % to +25 %), so box sizes follow
the real distribution while perspective, poles, the street and occlusion by nearer vehicles,
people and trees stay those of the scene. A sign too large for its curb at that depth moves
towards the image centre (a post at the road's edge). Posts are placed largest first, and one whose
signs would overlap a placed sign, or that a nearer pole would cross, is re-drawn (up to TRIES
times), so signs rarely hide each other; 1 to 3 signs share a post. Classes are uniform over the 43 GTSDB classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from .context import DrawContext
from .domains import DomainStyle
from .props import SignSpec, draw_sign_post, sign_height_m, stack_centres
from .signs import IMPLEMENTED_CLASSES, SHAPE_EXTENT, SIGN_SHAPE, SIGN_SIZE_M
from .street import StreetPlan, Strip

Z_MIN = 3.0  # metres: no post nearer than this
STACKS = (0.4, 0.4, 0.2)  # probability of 1, 2, 3 signs on a post
BACKS = 0.1  # back-facing posts (never boxed) per expected front sign
TRIES = 12  # placements tried per post before it is dropped
PAD = 1.0  # pixels kept free around every sign and to the image border
POLE_RADIUS_M = 0.05  # the widest pole draw_sign_post draws
PLATE_JITTER = (0.8, 1.25)  # German signs come in several sizes per shape

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class _Post:
    x: float
    z: float
    y_base: float
    top: float
    signs: tuple[Rect, ...]
    pole: Rect


def _stack(rng: np.random.Generator) -> int:
    return 1 + int(rng.choice(len(STACKS), p=STACKS))


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] + PAD and b[0] < a[2] + PAD and a[1] < b[3] + PAD and b[1] < a[3] + PAD


def _ground_height(plan: StreetPlan, x: float) -> float:
    """Height of the surface at lateral position x (curb level on sidewalks, 0 on the road)."""
    for strip in plan.strips:
        if strip.x0 <= x <= strip.x1:
            return strip.y
    return 0.0


def _fit(
    ctx: DrawContext, plan: StreetPlan, spot: Strip, specs: list[SignSpec], box_px: float, z_max: float
) -> _Post | None:
    """Where on ``spot`` a post with ``specs`` (boxes ``box_px``) stands, or None if it does not fit."""
    cam, rng = ctx.camera, ctx.rng
    side = 1 if spot.centre > 0 else -1
    shape = SIGN_SHAPE[specs[0].gtsdb_class]
    plate = SIGN_SIZE_M[shape] * SHAPE_EXTENT[shape][1] * rng.uniform(*PLATE_JITTER)  # the box side, metres
    z = float(np.clip(plate * cam.focal / box_px, Z_MIN, z_max))
    if plan.in_side_street(z, 1.0):
        return None
    # Anywhere across the strip, not only at its road edge: posts at one distance from the road line
    # up on one ray from the vanishing point and hide each other.
    inner = spot.x0 if side > 0 else spot.x1
    x = inner + side * (0.4 + rng.uniform(0.0, max(spot.x1 - spot.x0 - 0.8, 0.0)))
    half = box_px / 2 + PAD
    if 2 * half >= cam.width:
        return None
    u = float(cam.project(x, 0.0, z)[0])
    u_in = min(max(u, half), cam.width - 1 - half)
    if u_in != u:  # too large for the curb at this depth: move the post into the picture
        x = (u_in - cam.cx) * z / cam.focal - cam.curvature * z * z
    y_base = _ground_height(plan, x)
    ppm = cam.ppm(z)
    stack = sum(sign_height_m(s, ppm) + 0.1 for s in specs) - 0.1
    top_in = cam.height_m + (cam.horizon - PAD) * z / cam.focal  # the image's top row at depth z
    top = min(y_base + rng.uniform(2.2, 3.6), top_in)
    if top - stack < y_base + 0.3:
        return None
    rects = []
    for s, yc in zip(specs, stack_centres(specs, top, ppm), strict=True):
        v = float(cam.project(x, yc, z)[1])
        h = sign_height_m(s, ppm) * ppm / 2
        rects.append((u_in - box_px / 2, v - h, u_in + box_px / 2, v + h))
    if rects[-1][3] > cam.height - 1 - PAD:
        return None
    r = max(POLE_RADIUS_M * ppm, 1.0)
    v_top, v_base = (float(v) for v in cam.project(x, np.array([top + 0.1, y_base]), z)[1])
    return _Post(x, z, y_base, top, tuple(rects), (u_in - r, v_top, u_in + r, v_base))


def place_sized_signs(
    ctx: DrawContext,
    plan: StreetPlan,
    style: DomainStyle,
    add: Callable[[float, Callable[[], None]], None],
    spots: dict[int, list[Strip]],
    z_max: float,
) -> None:
    """Add posts carrying about ``style.signs_per_image`` front signs (and a few backs) via ``add(z, draw)``.

    ``spots``: per side (-1 left, 1 right) the strips a post may stand on (sidewalks, medians,
    verges); fronts stand mostly on the right (they face the camera's lane), backs on the left.
    """
    boxes = style.sign_boxes
    if boxes is None or not any(spots.values()):
        return
    rng, width = ctx.rng, ctx.camera.width
    groups: list[tuple[float, bool, int]] = []  # (box px, facing, signs on the post)
    left = int(rng.poisson(style.signs_per_image))
    while left > 0:
        k = min(left, _stack(rng))
        groups.append((boxes.sample(rng, width), True, k))
        left -= k
    for _ in range(int(rng.poisson(style.signs_per_image * BACKS))):
        groups.append((boxes.sample(rng, width), False, _stack(rng)))
    groups.sort(key=lambda g: -g[0])  # largest first: they have the fewest places that fit
    signs: list[tuple[Rect, float]] = []  # placed sign boxes with their depth
    poles: list[tuple[Rect, float]] = []
    for box_px, facing, k in groups:
        classes = rng.integers(len(IMPLEMENTED_CLASSES), size=k)
        specs = [SignSpec(IMPLEMENTED_CLASSES[int(c)], facing, box_px) for c in classes]
        for _ in range(TRIES):
            side = 1 if rng.random() < (0.65 if facing else 0.35) else -1
            strips = spots.get(side) or spots.get(-side)
            post = _fit(ctx, plan, strips[int(rng.integers(len(strips)))], specs, box_px, z_max) if strips else None
            if post is None:
                continue
            hidden = any(_overlaps(r, o) for r in post.signs for o, _ in signs)
            hidden = hidden or any(_overlaps(r, p) for r in post.signs for p, zp in poles if zp < post.z)
            hidden = hidden or any(_overlaps(post.pole, o) for o, zs in signs if zs > post.z)
            if hidden:
                continue
            signs.extend((r, post.z) for r in post.signs)
            poles.append((post.pole, post.z))
            add(post.z, partial(draw_sign_post, ctx, post.x, post.z, post.y_base, specs, post.top))
            break
