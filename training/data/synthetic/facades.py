"""The facades along the street: buildings, walls, fences, hedges and gaps on both sides.

Planned from the street plan (where the sidewalks end) and drawn after the ground, so the
buildings' bases meet the sidewalk edge of :mod:`.street`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import colors
from .camera import quads
from .context import DrawContext, L
from .street import CURB_HEIGHT, StreetPlan

_FACADE_PAINTS: tuple[colors.Color, ...] = (
    (200, 190, 170),
    (230, 225, 215),
    (150, 150, 150),
    (160, 80, 60),
    (210, 190, 120),
    (120, 110, 100),
    (180, 200, 200),
    (100, 100, 110),
)


@dataclass(frozen=True)
class Segment:
    kind: str  # building | wall | fence | hedge | open
    z0: float
    z1: float
    height: float


def plan_facades(rng: np.random.Generator, plan: StreetPlan) -> dict[int, list[Segment]]:
    out: dict[int, list[Segment]] = {}
    z_end = min(plan.z_far, 250.0)
    for side in (-1, 1):
        segs, z = [], 0.5
        while z < z_end:
            kind = str(rng.choice(["building", "wall", "fence", "hedge"], p=[0.64, 0.12, 0.12, 0.12]))
            length = rng.uniform(8, 28) if kind == "building" else rng.uniform(4, 16)
            z1 = min(z + length, z_end)
            for a, b in plan.side_streets:
                if z < b and z1 > a:  # cut the segment at the side street
                    if z < a:
                        z1 = a
                    else:
                        kind, z1 = "open", b
            height = {
                "building": rng.uniform(7, 26),
                "wall": rng.uniform(1.2, 3.0),
                "fence": rng.uniform(1.0, 2.2),
                "hedge": rng.uniform(1.0, 2.6),
                "open": 0.0,
            }[kind]
            segs.append(Segment(kind, z, z1, height))
            z = z1
        out[side] = segs
    return out


def draw_facades(ctx: DrawContext, plan: StreetPlan, segments: dict[int, list[Segment]]) -> None:
    """Back layers (buildings and trees behind low walls) first, then the facade planes."""
    for side in (-1, 1):
        x = plan.facade_x[0 if side < 0 else 1]
        for s in segments[side]:
            if s.kind != "building":
                _behind(ctx, x, side, s)
    for side in (-1, 1):
        x = plan.facade_x[0 if side < 0 else 1]
        shade = ctx.rng.uniform(0.55, 0.8) if side == plan.shadow_side else 1.0
        prev = "building"
        for s in segments[side]:
            if s.kind == "building":
                _building(ctx, x, side, s, show_side=prev != "building", shade=shade)
            elif s.kind != "open":
                _low_barrier(ctx, x, s, shade)
            prev = s.kind
    if plan.street_end:
        _end_building(ctx, plan)


def _behind(ctx: DrawContext, x: float, side: int, s: Segment) -> None:
    rng = ctx.rng
    zm = 0.5 * (s.z0 + s.z1)
    if rng.random() < 0.55:
        xb = x + side * rng.uniform(8, 20)
        col = ctx.tone(colors.pick(rng, _FACADE_PAINTS, 0.06), zm)
        ctx.canvas.fill(
            [ctx.wall(xb, max(s.z0 - 6, 0.5), s.z1 + 6, CURB_HEIGHT, rng.uniform(6, 20))],
            col,
            L["construction--structure--building"],
        )
    if s.kind != "open" or rng.random() < 0.5:
        polys = []
        for z in np.arange(s.z0 + rng.uniform(0, 3), s.z1, rng.uniform(2.5, 5)):
            xt = x + side * rng.uniform(0.8, 4)
            h = rng.uniform(3, 9)
            polys.append(ctx.blob(xt, h * 0.6, z, rng.uniform(1.5, 3), h * 0.45, 0.25))
        col = ctx.tone(colors.hsv(rng, (0.18, 0.35), (0.35, 0.7), (0.2, 0.5)), zm)
        ctx.canvas.fill(polys, col, L["nature--vegetation"])


def _building(ctx: DrawContext, x: float, side: int, s: Segment, show_side: bool, shade: float = 1.0) -> None:
    rng, canvas, cam = ctx.rng, ctx.canvas, ctx.camera
    label = L["construction--structure--building"]
    zm = 0.5 * (s.z0 + s.z1)
    col = ctx.tone(colors.scale(colors.pick(rng, _FACADE_PAINTS, 0.06), shade), zm)
    base = CURB_HEIGHT
    if show_side and s.z0 > 1.0:  # the building's own side wall, seen across the gap before it
        canvas.fill(
            [
                ctx.quad(
                    [[x, base, s.z0], [x + side * 12, base, s.z0], [x + side * 12, s.height, s.z0], [x, s.height, s.z0]]
                )
            ],
            colors.scale(col, 0.8),
            label,
        )
    canvas.fill([ctx.wall(x, s.z0, s.z1, base, s.height)], col, label)
    canvas.fill([ctx.wall(x, s.z0, s.z1, s.height - 0.6, s.height)], colors.scale(col, 0.75), label)
    glass = ctx.tone(colors.hsv(rng, (0.55, 0.65), (0.05, 0.3), (0.12, 0.4)), zm)
    lit = ctx.tone(colors.hsv(rng, (0.1, 0.15), (0.1, 0.4), (0.5, 0.85)), zm)
    pitch = rng.uniform(2.4, 3.6)
    win_w, win_h = rng.uniform(0.9, 1.5), rng.uniform(1.2, 1.8)
    # Windows only where they resolve to a couple of pixels.
    z_lim = min(s.z1, cam.focal * win_h / 2.0)
    if z_lim <= s.z0 + 1:
        return
    zs, ys = np.meshgrid(
        np.arange(s.z0 + rng.uniform(0.6, pitch), z_lim - win_w, pitch), np.arange(3.2, s.height - 1.6, 3.1)
    )
    zs, ys = zs.ravel(), ys.ravel()
    on = rng.random(zs.size) < 0.12
    canvas.fill(ctx.wall_quads(x, zs[~on], zs[~on] + win_w, ys[~on], ys[~on] + win_h), glass, label)
    canvas.fill(ctx.wall_quads(x, zs[on], zs[on] + win_w, ys[on], ys[on] + win_h), lit, label)
    if rng.random() < 0.6:  # shop fronts on the ground floor
        za = np.arange(s.z0 + 0.5, z_lim - 2, rng.uniform(4, 7))
        zb = np.minimum(za + rng.uniform(2, 4, za.size), s.z1)
        canvas.fill(ctx.wall_quads(x, za, zb, base + 0.3, base + 2.6), colors.scale(glass, 0.7), label)


def _low_barrier(ctx: DrawContext, x: float, s: Segment, shade: float = 1.0) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    zm = 0.5 * (s.z0 + s.z1)
    ctx = _Shaded(ctx, shade)
    if s.kind == "hedge":
        col = ctx.tone(colors.hsv(rng, (0.2, 0.33), (0.4, 0.75), (0.2, 0.45)), zm)
        canvas.fill([ctx.wall(x, s.z0, s.z1, CURB_HEIGHT, s.height)], col, L["nature--vegetation"])
        return
    if s.kind == "wall":
        col = ctx.tone(colors.pick(rng, ((160, 155, 145), (170, 90, 70), (120, 120, 115), (200, 195, 180))), zm)
        canvas.fill([ctx.wall(x, s.z0, s.z1, CURB_HEIGHT, s.height)], col, L["construction--barrier--wall"])
        canvas.fill(
            [ctx.wall(x, s.z0, s.z1, s.height - 0.12, s.height)],
            colors.scale(col, 0.8),
            L["construction--barrier--wall"],
        )
        return
    label = L["construction--barrier--fence"]
    col = ctx.tone(colors.pick(rng, ((60, 80, 60), (70, 70, 75), (130, 100, 70), (150, 150, 150))), zm)
    canvas.fill([ctx.wall(x, s.z0, s.z1, CURB_HEIGHT, s.height)], col, label)
    bar = colors.scale(col, rng.uniform(0.55, 0.75) if rng.random() < 0.5 else rng.uniform(1.3, 1.6))
    z_lim = min(s.z1, ctx.camera.focal * 0.15 / 2.5)  # bars at least ~2.5 px apart
    zs = np.arange(s.z0, z_lim, 0.15)[:, None]
    polys = quads(ctx.camera, x, np.array([[CURB_HEIGHT, s.height]]), np.hstack([zs, zs]))
    polys.append(ctx.camera.polygon(x, s.height - 0.1, np.geomspace(max(s.z0, 0.3), s.z1, 6)))
    canvas.lines(polys, bar, label, 1)


class _Shaded:
    """A DrawContext whose tone() also darkens (facades on the shadow side)."""

    def __init__(self, ctx: DrawContext, shade: float) -> None:
        self._ctx, self._shade = ctx, shade

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)

    def tone(self, color: colors.Color, z: float) -> colors.Color:
        return self._ctx.tone(colors.scale(color, self._shade), z)


def _end_building(ctx: DrawContext, plan: StreetPlan) -> None:
    rng, z = ctx.rng, plan.z_far
    x = -z * 1.5
    while x < z * 1.5:
        w = rng.uniform(10, 30)
        col = ctx.tone(colors.pick(rng, _FACADE_PAINTS, 0.06), z)
        h = rng.uniform(8, 25)
        ctx.canvas.fill([ctx.front(x, x + w, -0.5, h, z)], col, L["construction--structure--building"])
        ppm = ctx.camera.ppm(z)
        if ppm * 1.2 > 1.5:
            wx, wy = np.meshgrid(np.arange(x + 1, x + w - 1.5, 3.0), np.arange(3.2, h - 1.6, 3.1))
            wins = ctx.front_quads(wx.ravel(), wx.ravel() + 1.2, wy.ravel(), wy.ravel() + 1.5, z)
            ctx.canvas.fill(
                wins,
                ctx.tone(colors.hsv(rng, (0.55, 0.65), (0.05, 0.3), (0.12, 0.4)), z),
                L["construction--structure--building"],
            )
        x += w
