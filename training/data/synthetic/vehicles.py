"""Cars, trucks, buses and trams as shaded 3-D boxes projected by the street camera.

Boxes give perspective for free: the near face, the side facing the camera and (below
eye height) the roof are visible, so the same car looks different in every lane and at
every distance. Instance colours come from a paint palette plus jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import colors
from .context import DrawContext, L

CAR = L["object--vehicle--car"]
TRUCK = L["object--vehicle--truck"]
BUS = L["object--vehicle--bus"]
ON_RAILS = L["object--vehicle--on-rails"]
_GLASS = (40, 50, 60)
_BUS_PAINTS = ((240, 200, 30), (235, 235, 230), (30, 80, 160), (190, 30, 30), (40, 140, 80), (230, 120, 20))


@dataclass(frozen=True)
class Box:
    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float


def _box(ctx: DrawContext, b: Box, color: colors.Color, label: int, iid: int) -> None:
    """Fill the faces of b that face the camera (near face, one side, the roof if below the eye)."""
    cam, canvas = ctx.camera, ctx.canvas
    if b.y1 < cam.height_m:
        canvas.fill(
            [ctx.quad([[b.x0, b.y1, b.z0], [b.x1, b.y1, b.z0], [b.x1, b.y1, b.z1], [b.x0, b.y1, b.z1]])],
            colors.scale(color, 1.12),
            label,
            iid,
        )
    for x, visible in ((b.x0, b.x0 > 0), (b.x1, b.x1 < 0)):
        if visible:
            canvas.fill([ctx.wall(x, b.z0, b.z1, b.y0, b.y1)], colors.scale(color, 0.78), label, iid)
    canvas.fill([ctx.front(b.x0, b.x1, b.y0, b.y1, b.z0)], color, label, iid)


def _side_x(b: Box) -> float | None:
    return b.x0 if b.x0 > 0 else (b.x1 if b.x1 < 0 else None)


def _wheels(ctx: DrawContext, b: Box, r: float, zs: list[float], label: int, iid: int) -> None:
    """Tyres under the near face and, on the visible side, round wheels in the side plane."""
    tyre = ctx.tone(colors.grey(ctx.rng, 12, 35, 3), b.z0)
    w = 0.25
    ctx.canvas.fill(
        [
            ctx.front(b.x0 + 0.05, b.x0 + 0.05 + w, 0.0, r * 1.1, b.z0 + 0.3),
            ctx.front(b.x1 - 0.05 - w, b.x1 - 0.05, 0.0, r * 1.1, b.z0 + 0.3),
        ],
        tyre,
        label,
        iid,
    )
    x = _side_x(b)
    if x is None:
        return
    a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    polys = [ctx.camera.polygon(x, r + np.sin(a) * r, zc + np.cos(a) * r) for zc in zs]
    ctx.canvas.fill(polys, tyre, label, iid)
    hub = ctx.tone(colors.grey(ctx.rng, 100, 190, 3), b.z0)
    ctx.canvas.fill(
        [ctx.camera.polygon(x, r + np.sin(a) * r * 0.5, zc + np.cos(a) * r * 0.5) for zc in zs], hub, label, iid
    )


def _shadow(ctx: DrawContext, b: Box) -> None:
    ctx.canvas.shadow([ctx.ground(b.x0 - 0.15, b.x1 + 0.15, b.z0 - 0.25, b.z1, n=2)], ctx.rng.uniform(0.35, 0.6))


def draw_car(ctx: DrawContext, x: float, z: float, oncoming: bool) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    w, length = rng.uniform(1.65, 1.95), rng.uniform(3.8, 4.9)
    hb, hc = rng.uniform(0.6, 0.85), rng.uniform(0.45, 0.65)
    paint = ctx.tone(colors.pick(rng, colors.CAR_PAINTS, 0.07), z)
    glass = ctx.tone(colors.jitter(rng, _GLASS, 0.05), z)
    body = Box(x - w / 2, x + w / 2, 0.28, 0.28 + hb, z, z + length)
    cabin = Box(x - w * 0.42, x + w * 0.42, body.y1, body.y1 + hc, z + length * 0.28, z + length * 0.8)
    iid = canvas.begin(CAR)
    # Order matters: the body's roof lies under the cabin, the side wheels on the body side.
    _box(ctx, body, paint, CAR, iid)
    detailed = ctx.camera.ppm(z) * w >= 12  # far cars: no sub-pixel parts
    if detailed:
        _wheels(ctx, body, 0.32, [z + 0.75, z + length - 0.8], CAR, iid)
    _box(ctx, cabin, paint, CAR, iid)
    ctx.canvas.fill(
        [ctx.front(cabin.x0 + 0.08, cabin.x1 - 0.08, cabin.y0 + 0.05, cabin.y1 - 0.06, cabin.z0)], glass, CAR, iid
    )
    if not detailed:
        canvas.end(iid)
        return
    sx = _side_x(cabin)
    if sx is not None:
        ctx.canvas.fill(
            [ctx.wall(sx, cabin.z0 + 0.15, cabin.z1 - 0.15, cabin.y0 + 0.06, cabin.y1 - 0.06, n=2)],
            colors.scale(glass, 0.85),
            CAR,
            iid,
        )
    lamp = (250, 245, 220) if oncoming else (200, 20, 20)
    y = body.y1 - 0.22
    canvas.fill(
        [
            ctx.front(body.x0 + 0.08, body.x0 + 0.35, y, y + 0.13, z),
            ctx.front(body.x1 - 0.35, body.x1 - 0.08, y, y + 0.13, z),
        ],
        ctx.tone(lamp, z),
        CAR,
        iid,
    )
    canvas.fill([ctx.front(x - 0.26, x + 0.26, 0.4, 0.51, z)], ctx.tone((225, 225, 220), z), CAR, iid)
    if oncoming:
        canvas.fill([ctx.front(x - 0.4, x + 0.4, y - 0.02, y + 0.1, z)], ctx.tone((35, 35, 38), z), CAR, iid)
    canvas.end(iid)


def draw_truck(ctx: DrawContext, x: float, z: float, oncoming: bool) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    cab_paint = ctx.tone(colors.pick(rng, colors.CAR_PAINTS, 0.08), z)
    cargo_paint = ctx.tone(colors.grey(rng, 170, 240, 8) if rng.random() < 0.6 else colors.clothing(rng), z)
    cargo_len, cab_len = rng.uniform(5.0, 8.5), 2.2
    h = rng.uniform(3.2, 3.9)
    iid = canvas.begin(TRUCK)
    if oncoming:
        cargo = Box(x - 1.25, x + 1.25, 0.9, h, z + cab_len, z + cab_len + cargo_len)
        cab = Box(x - 1.2, x + 1.2, 0.45, 2.9, z, z + cab_len)
        _box(ctx, cargo, cargo_paint, TRUCK, iid)
        _box(ctx, cab, cab_paint, TRUCK, iid)
        canvas.fill([ctx.front(x - 1.05, x + 1.05, 1.7, 2.7, z)], ctx.tone(_GLASS, z), TRUCK, iid)
        canvas.fill([ctx.front(x - 1.0, x + 1.0, 0.6, 1.1, z)], ctx.tone((40, 40, 42), z), TRUCK, iid)
        body = cab
    else:
        cab = Box(x - 1.2, x + 1.2, 0.45, 2.9, z + cargo_len, z + cargo_len + cab_len)
        cargo = Box(x - 1.25, x + 1.25, 0.9, h, z, z + cargo_len)
        _box(ctx, cab, cab_paint, TRUCK, iid)
        _box(ctx, cargo, cargo_paint, TRUCK, iid)
        canvas.fill([ctx.front(x - 0.02, x + 0.02, 1.0, h - 0.1, z)], colors.scale(cargo_paint, 0.6), TRUCK, iid)
        canvas.fill([ctx.front(x - 1.2, x + 1.2, 0.55, 0.9, z)], ctx.tone((35, 35, 35), z), TRUCK, iid)
        body = cargo
    _wheels(
        ctx,
        Box(x - 1.2, x + 1.2, 0.0, 1.0, body.z0, z + cargo_len + cab_len),
        0.5,
        [z + 1.0, z + cargo_len + cab_len - 1.3, z + cargo_len + cab_len - 2.5],
        TRUCK,
        iid,
    )
    canvas.end(iid)


def draw_bus(ctx: DrawContext, x: float, z: float, oncoming: bool, tram: bool = False) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    label = ON_RAILS if tram else BUS
    length = rng.uniform(22, 32) if tram else rng.uniform(10.5, 13)
    w, h = (2.4, 3.4) if tram else (2.55, 3.1)
    paint = ctx.tone(colors.pick(rng, _BUS_PAINTS, 0.07), z)
    glass = ctx.tone(colors.jitter(rng, _GLASS, 0.05), z)
    b = Box(x - w / 2, x + w / 2, 0.35 if tram else 0.3, h, z, z + length)
    iid = canvas.begin(label)
    if tram:  # pantograph on the roof
        top = b.y1
        canvas.lines(
            [ctx.quad([[x, top, z + 5], [x, top + 0.8, z + 6.5], [x, top + 1.4, z + 5.5]])],
            ctx.tone((50, 50, 50), z),
            label,
            max(1.0, ctx.camera.ppm(z + 5) * 0.05),
            iid,
        )
    _box(ctx, b, paint, label, iid)
    sx = _side_x(b)
    if sx is not None:
        ctx.canvas.fill(
            [ctx.wall(sx, z + 1.0, z + length - 0.8, 1.25, h - 0.45)], colors.scale(glass, 0.85), label, iid
        )
    if tram:
        ctx.canvas.fill([ctx.front(b.x0, b.x1, 0.35, 1.0, z)], colors.scale(paint, 0.6), label, iid)
    if oncoming or tram:
        canvas.fill([ctx.front(b.x0 + 0.1, b.x1 - 0.1, 1.2, h - 0.5, z)], glass, label, iid)
        canvas.fill([ctx.front(b.x0 + 0.3, b.x1 - 0.3, h - 0.42, h - 0.12, z)], ctx.tone((240, 150, 30), z), label, iid)
    else:
        canvas.fill([ctx.front(b.x0 + 0.2, b.x1 - 0.2, 1.9, h - 0.4, z)], glass, label, iid)
        canvas.fill(
            [ctx.front(b.x0 + 0.1, b.x0 + 0.35, 0.7, 1.1, z), ctx.front(b.x1 - 0.35, b.x1 - 0.1, 0.7, 1.1, z)],
            ctx.tone((200, 25, 25), z),
            label,
            iid,
        )
    _wheels(ctx, b, 0.48, [z + 2.2, z + length - 3.0], label, iid)
    canvas.end(iid)


def vehicle_box(kind: str, x: float, z: float) -> Box:
    """Conservative ground footprint used for shadows and spacing."""
    half, length = {"car": (1.0, 4.9), "truck": (1.3, 11.0), "bus": (1.3, 13.0), "tram": (1.2, 32.0)}[kind]
    return Box(x - half, x + half, 0.0, 3.0, z, z + length)


def draw_vehicle_shadow(ctx: DrawContext, kind: str, x: float, z: float) -> None:
    b = vehicle_box(kind, x, z)
    _shadow(ctx, Box(b.x0, b.x1, 0, 0, b.z0, min(b.z1, z + 6)))
