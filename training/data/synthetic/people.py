"""Persons, riders and two-wheelers, drawn as upright figures in metric body coordinates.

Riders wear the same clothes as pedestrians; what makes a rider a rider is the bicycle,
motorcycle or scooter under them, which is exactly the context cue Vistas encodes.
Boys and girls are shorter with larger heads; women more often long hair or a skirt,
so the Open-Images style man/woman/boy/girl tags have something to be learnt from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import colors
from .camera import to_fixed
from .context import DrawContext, L

PERSON = L["human--person"]
BICYCLIST = L["human--rider--bicyclist"]
MOTORCYCLIST = L["human--rider--motorcyclist"]
OTHER_RIDER = L["human--rider--other-rider"]
BICYCLE = L["object--vehicle--bicycle"]
MOTORCYCLE = L["object--vehicle--motorcycle"]
WHEELED_SLOW = L["object--vehicle--wheeled-slow"]
SUBTYPES = ("man", "woman", "boy", "girl")


@dataclass(frozen=True)
class Outfit:
    subtype: str
    height: float
    skin: colors.Color
    hair: colors.Color
    top: colors.Color
    bottom: colors.Color
    shoes: colors.Color
    long_hair: bool
    skirt: bool
    short_sleeves: bool
    bag: colors.Color | None
    helmet: colors.Color | None


def outfit(rng: np.random.Generator, helmet: bool = False) -> Outfit:
    subtype = SUBTYPES[int(rng.choice(4, p=[0.4, 0.36, 0.12, 0.12]))]
    child = subtype in ("boy", "girl")
    female = subtype in ("woman", "girl")
    height = rng.uniform(1.0, 1.5) if child else (rng.uniform(1.58, 1.8) if female else rng.uniform(1.68, 1.95))
    return Outfit(
        subtype=subtype,
        height=height,
        skin=colors.pick(rng, colors.SKIN_TONES, 0.04),
        hair=colors.pick(rng, colors.HAIR, 0.04),
        top=colors.clothing(rng),
        bottom=colors.clothing(rng) if rng.random() < 0.6 else colors.hsv(rng, (0.58, 0.65), (0.3, 0.7), (0.2, 0.5)),
        shoes=colors.grey(rng, 10, 90, 8),
        long_hair=rng.random() < (0.7 if female else 0.08),
        skirt=female and rng.random() < 0.35,
        short_sleeves=rng.random() < 0.3,
        bag=colors.clothing(rng) if rng.random() < 0.3 else None,
        helmet=colors.hsv(rng, (0, 1), (0.0, 0.9), (0.1, 0.95)) if helmet else None,
    )


class Figure:
    """Maps body coordinates (metres; dx right, dy up from the ground point) to pixels."""

    def __init__(
        self, ctx: DrawContext, x: float, z: float, y_base: float, flip: float = 1.0, squeeze: float = 1.0
    ) -> None:
        self.ctx = ctx
        u, v = ctx.camera.project(x, y_base, z)
        self.u, self.v = float(u), float(v)
        self.s = ctx.camera.ppm(z)
        self.flip, self.squeeze, self.z = flip, squeeze, z

    def poly(self, pts) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64)
        return to_fixed(self.u + p[:, 0] * self.flip * self.squeeze * self.s, self.v - p[:, 1] * self.s)

    def limb(self, a, b, w0: float, w1: float) -> np.ndarray:
        """Tapered quad from joint a to joint b (widths in metres)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
        return self.poly([a + n * w0 / 2, b + n * w1 / 2, b - n * w1 / 2, a - n * w0 / 2])

    def ellipse(self, c, rx: float, ry: float, n: int = 14) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self.poly(np.stack([c[0] + np.cos(a) * rx, c[1] + np.sin(a) * ry], 1))

    def ring(self, c, r: float) -> list[np.ndarray]:
        """Wheel outline as a closed polyline (interior stays see-through)."""
        a = np.linspace(0, 2 * np.pi, 24)
        return [self.poly(np.stack([c[0] + np.cos(a) * r, c[1] + np.sin(a) * r], 1))]

    def px(self, metres: float) -> float:
        return metres * self.s

    def tone(self, color: colors.Color) -> colors.Color:
        return self.ctx.tone(color, self.z)


def _head(f: Figure, o: Outfit, centre, label: int, iid: int) -> None:
    child = o.subtype in ("boy", "girl")
    r = (0.085 if child else 0.068) * o.height * (1.0 if o.helmet is None else 1.25)
    canvas = f.ctx.canvas
    if o.long_hair and o.helmet is None:
        cx, cy = centre
        canvas.fill(
            [
                f.poly(
                    [[cx - r * 1.1, cy], [cx + r * 1.1, cy], [cx + r * 1.2, cy - r * 2.4], [cx - r * 1.2, cy - r * 2.4]]
                )
            ],
            f.tone(o.hair),
            label,
            iid,
        )
    canvas.fill([f.ellipse(centre, r * 0.85, r)], f.tone(o.skin), label, iid)
    cap = o.helmet if o.helmet is not None else o.hair
    a = np.linspace(-0.15, np.pi + 0.15, 10)
    top = np.stack([centre[0] + np.cos(a) * r * 0.92, centre[1] + np.sin(a) * r * 1.04], 1)
    canvas.fill([f.poly(top)], f.tone(cap), label, iid)
    if o.helmet is not None:  # visor
        canvas.fill(
            [
                f.poly(
                    [
                        [centre[0] - r * 0.7, centre[1]],
                        [centre[0] + r * 0.7, centre[1]],
                        [centre[0] + r * 0.6, centre[1] - r * 0.35],
                        [centre[0] - r * 0.6, centre[1] - r * 0.35],
                    ]
                )
            ],
            f.tone((30, 30, 35)),
            label,
            iid,
        )


def draw_walker(
    ctx: DrawContext,
    x: float,
    z: float,
    y_base: float,
    o: Outfit,
    phase: float,
    label: int = PERSON,
    arms_forward: float = 0.0,
) -> int:
    """Standing / walking person seen roughly from the front or back; returns the instance id."""
    f = Figure(ctx, x, z, y_base, flip=1.0 if ctx.rng.random() < 0.5 else -1.0, squeeze=ctx.rng.uniform(0.8, 1.0))
    h = o.height
    female = o.subtype in ("woman", "girl")
    canvas = ctx.canvas
    iid = canvas.begin(label, subtype=o.subtype)
    stride = 0.07 * h * np.sin(phase)
    hip_y, sh_y = 0.52 * h, 0.81 * h
    sh_w = (0.1 if female else 0.12) * h
    for side, st in ((-1, stride), (1, -stride)):
        canvas.fill(
            [f.limb([side * 0.045 * h, hip_y], [side * 0.06 * h + st, 0.04 * h], 0.075 * h, 0.05 * h)],
            f.tone(o.bottom),
            label,
            iid,
        )
        canvas.fill(
            [f.limb([side * 0.06 * h + st, 0.045 * h], [side * 0.065 * h + st * 1.1, 0.0], 0.06 * h, 0.06 * h)],
            f.tone(o.shoes),
            label,
            iid,
        )
    canvas.fill(
        [f.poly([[-sh_w, sh_y], [sh_w, sh_y], [0.085 * h, hip_y - 0.02 * h], [-0.085 * h, hip_y - 0.02 * h]])],
        f.tone(o.top),
        label,
        iid,
    )
    if o.skirt:
        canvas.fill(
            [f.poly([[-0.09 * h, 0.56 * h], [0.09 * h, 0.56 * h], [0.15 * h, 0.3 * h], [-0.15 * h, 0.3 * h]])],
            f.tone(o.bottom),
            label,
            iid,
        )
    for side in (-1, 1):
        swing = -side * stride * 0.6 + arms_forward
        hand = [side * (0.14 * h) + swing, 0.46 * h + abs(arms_forward) * 0.3]
        elbow = [side * 0.135 * h + swing * 0.5, 0.63 * h]
        sleeve = o.skin if o.short_sleeves else o.top
        canvas.fill(
            [f.limb([side * (sh_w - 0.02 * h), sh_y - 0.01 * h], elbow, 0.055 * h, 0.045 * h)],
            f.tone(o.top),
            label,
            iid,
        )
        canvas.fill([f.limb(elbow, hand, 0.045 * h, 0.04 * h)], f.tone(sleeve), label, iid)
    if o.bag is not None:
        canvas.fill(
            [f.poly([[0.13 * h, 0.62 * h], [0.2 * h, 0.62 * h], [0.2 * h, 0.48 * h], [0.13 * h, 0.48 * h]])],
            f.tone(o.bag),
            label,
            iid,
        )
    canvas.fill([f.limb([0, sh_y], [0, 0.87 * h], 0.05 * h, 0.05 * h)], f.tone(o.skin), label, iid)
    _head(f, o, [0.0, 0.92 * h], label, iid)
    canvas.end(iid)
    return iid


def _seated_rider(f: Figure, o: Outfit, hip, shoulder, hand, foot, label: int) -> int:
    canvas = f.ctx.canvas
    iid = canvas.begin(label, subtype=o.subtype)
    knee = [(hip[0] + foot[0]) / 2 + 0.18, (hip[1] + foot[1]) / 2 + 0.12]
    canvas.fill([f.limb(hip, knee, 0.16, 0.12), f.limb(knee, foot, 0.12, 0.1)], f.tone(o.bottom), label, iid)
    canvas.fill([f.limb(foot, [foot[0] + 0.12, foot[1] - 0.03], 0.08, 0.08)], f.tone(o.shoes), label, iid)
    canvas.fill([f.limb(hip, shoulder, 0.34, 0.38)], f.tone(o.top), label, iid)
    elbow = [(shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2 - 0.06]
    canvas.fill([f.limb(shoulder, elbow, 0.1, 0.09), f.limb(elbow, hand, 0.09, 0.08)], f.tone(o.top), label, iid)
    head = [shoulder[0] + 0.06, shoulder[1] + 0.19]
    _head(f, o, head, label, iid)
    canvas.end(iid)
    return iid


def draw_bicycle(ctx: DrawContext, x: float, z: float, y_base: float, with_rider: Outfit | None) -> None:
    """Bicycle seen from the side at an angle (squeeze), with an optional bicyclist."""
    rng, canvas = ctx.rng, ctx.canvas
    f = Figure(ctx, x, z, y_base, flip=1.0 if rng.random() < 0.5 else -1.0, squeeze=rng.uniform(0.45, 1.0))
    frame = f.tone(colors.clothing(rng) if rng.random() < 0.6 else colors.grey(rng, 20, 200, 5))
    tyre = f.tone(colors.grey(rng, 15, 45, 3))
    iid = canvas.begin(BICYCLE)
    r = 0.34
    rear, front = [-0.52, r], [0.52, r]
    thick = max(1.0, f.px(0.05))
    canvas.lines(f.ring(rear, r) + f.ring(front, r), tyre, BICYCLE, thick, iid)
    seat, bb, head, bar = [-0.22, 0.92], [0.0, 0.3], [0.36, 0.9], [0.4, 1.02]
    canvas.lines(
        [
            f.poly([rear, seat, bb, rear]),
            f.poly([seat, head, bb]),
            f.poly([front, bar]),
            f.poly([[seat[0] - 0.1, seat[1] + 0.04], [seat[0] + 0.08, seat[1] + 0.04]]),
            f.poly([[bar[0] - 0.05, bar[1]], [bar[0] + 0.08, bar[1] + 0.02]]),
        ],
        frame,
        BICYCLE,
        max(1.0, f.px(0.04)),
        iid,
    )
    canvas.end(iid)
    if with_rider is not None:
        pedal = [0.12 * np.cos(rng.uniform(0, 6.3)), 0.3 + 0.15]
        _seated_rider(f, with_rider, [-0.2, 0.97], [0.12, 1.5], bar, pedal, BICYCLIST)


def draw_motorcycle(ctx: DrawContext, x: float, z: float, y_base: float, with_rider: Outfit | None) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    f = Figure(ctx, x, z, y_base, flip=1.0 if rng.random() < 0.5 else -1.0, squeeze=rng.uniform(0.5, 1.0))
    paint = f.tone(colors.pick(rng, colors.CAR_PAINTS, 0.08))
    tyre = f.tone(colors.grey(rng, 10, 35, 3))
    iid = canvas.begin(MOTORCYCLE)
    r = 0.31
    canvas.fill([f.ellipse([-0.7, r], r, r), f.ellipse([0.7, r], r, r)], tyre, MOTORCYCLE, iid)
    canvas.fill(
        [f.ellipse([-0.7, r], r * 0.45, r * 0.45), f.ellipse([0.7, r], r * 0.45, r * 0.45)],
        f.tone((150, 150, 150)),
        MOTORCYCLE,
        iid,
    )
    canvas.fill([f.poly([[-0.25, 0.25], [0.3, 0.25], [0.35, 0.6], [-0.2, 0.6]])], f.tone((60, 60, 62)), MOTORCYCLE, iid)
    canvas.fill(
        [
            f.poly(
                [
                    [-0.85, 0.62],
                    [-0.5, 0.82],
                    [-0.05, 0.82],
                    [0.15, 0.98],
                    [0.45, 0.95],
                    [0.5, 0.7],
                    [0.25, 0.6],
                    [-0.5, 0.55],
                ]
            )
        ],
        paint,
        MOTORCYCLE,
        iid,
    )
    canvas.lines([f.poly([[0.7, r], [0.5, 1.05]])], f.tone((170, 170, 170)), MOTORCYCLE, max(1.0, f.px(0.06)), iid)
    canvas.end(iid)
    if with_rider is not None:
        _seated_rider(f, with_rider, [-0.3, 0.95], [-0.05, 1.5], [0.48, 1.05], [0.0, 0.4], MOTORCYCLIST)


def draw_scooter_rider(ctx: DrawContext, x: float, z: float, y_base: float, o: Outfit) -> None:
    """Person standing on a kick scooter: the "other rider" of Vistas."""
    rng, canvas = ctx.rng, ctx.canvas
    f = Figure(ctx, x, z, y_base, flip=1.0 if rng.random() < 0.5 else -1.0, squeeze=rng.uniform(0.6, 1.0))
    iid = canvas.begin(WHEELED_SLOW)
    metal = f.tone(colors.grey(rng, 90, 200, 10))
    canvas.fill(
        [f.ellipse([-0.32, 0.08], 0.08, 0.08), f.ellipse([0.32, 0.08], 0.08, 0.08)],
        f.tone((25, 25, 25)),
        WHEELED_SLOW,
        iid,
    )
    canvas.lines(
        [f.poly([[-0.35, 0.12], [0.3, 0.12], [0.36, 1.0]]), f.poly([[0.26, 1.0], [0.46, 1.0]])],
        metal,
        WHEELED_SLOW,
        max(1.0, f.px(0.045)),
        iid,
    )
    canvas.end(iid)
    draw_walker(ctx, x, z + 0.01, y_base + 0.13, o, phase=0.0, label=OTHER_RIDER, arms_forward=0.08)
