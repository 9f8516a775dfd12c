"""Where the movable and upright things go: vehicles in lanes, people on sidewalks, posts at curbs.

Everything is collected as (depth, draw) actors and drawn far to near, which is the
painter's algorithm that makes near objects occlude far ones in image and truth alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .context import DrawContext
from .domains import DomainStyle
from .people import draw_bicycle, draw_motorcycle, draw_scooter_rider, draw_walker, outfit
from .props import SignSpec, draw_sign_frame, draw_sign_post, draw_traffic_light, draw_tree
from .signs import IMPLEMENTED_CLASSES
from .sized_signs import place_sized_signs
from .street import CURB_HEIGHT, StreetPlan, Strip
from .vehicles import draw_bus, draw_car, draw_truck, draw_vehicle_shadow

Z_MIN = 2.5
POST_STRIPS = ("sidewalk", "median", "terrain")  # where sized sign posts may stand
# Frequent real-world signs are drawn more often (GTSDB itself is dominated by them).
_SIGN_WEIGHT = np.array([3.0 if c in (1, 2, 4, 12, 13, 38, 14, 17) else 1.0 for c in IMPLEMENTED_CLASSES])


@dataclass(order=True)
class Actor:
    z: float
    seq: int
    draw: Callable[[], None] = field(compare=False)
    shadow: Callable[[], None] | None = field(default=None, compare=False)


class _Cast:
    def __init__(self) -> None:
        self.actors: list[Actor] = []

    def add(self, z: float, draw: Callable[[], None], shadow: Callable[[], None] | None = None) -> None:
        self.actors.append(Actor(float(z), len(self.actors), draw, shadow))


def _sidewalk(plan: StreetPlan, side: int) -> Strip | None:
    walks = [s for s in plan.strips_of("sidewalk") if np.sign(s.centre) == side]
    return walks[0] if walks else None


def _in_view_z(ctx: DrawContext, x: float) -> float:
    """Smallest depth at which something at lateral position x is inside the image."""
    return max(5.0, abs(x) * ctx.camera.focal / (0.45 * ctx.camera.width))


def _random_sign(rng: np.random.Generator) -> int:
    return int(rng.choice(IMPLEMENTED_CLASSES, p=_SIGN_WEIGHT / _SIGN_WEIGHT.sum()))


# The kinds ``DomainStyle.absent_vehicles`` may leave out. Trams ("train") are not among them: only a
# tram street has one, so they are already absent from most images (81 % of the large tag set).
ABSENT_KINDS = ("car", "truck", "bus")


def left_out_vehicles(rng: np.random.Generator, share: float) -> frozenset[str]:
    """The vehicle kinds left out of this image: each of :data:`ABSENT_KINDS` with probability ``share``.

    Draws nothing when ``share`` is 0, so images without the option are exactly as before.
    """
    if share <= 0:
        return frozenset()
    return frozenset(k for k, u in zip(ABSENT_KINDS, rng.random(len(ABSENT_KINDS)), strict=True) if u < share)


def populate(ctx: DrawContext, plan: StreetPlan, style: DomainStyle) -> list[Actor]:
    cast = _Cast()
    z_max = min(plan.z_far - 3.0, 110.0)
    _vehicles(ctx, plan, style, cast, z_max, left_out_vehicles(ctx.rng, style.absent_vehicles))
    _people(ctx, plan, style, cast, z_max)
    _furniture(ctx, plan, style, cast, z_max)
    return sorted(cast.actors, key=lambda a: (-a.z, a.seq))


def _vehicles(
    ctx: DrawContext,
    plan: StreetPlan,
    style: DomainStyle,
    cast: _Cast,
    z_max: float,
    left_out: frozenset[str] = frozenset(),
) -> None:
    """Traffic in the lanes, a tram on its track, parked cars; kinds in ``left_out`` leave their place empty."""
    rng = ctx.rng
    lanes = [(x, False) for x in plan.lane_centres(own=True)] + [(x, True) for x in plan.lane_centres(own=False)]
    for x_lane, oncoming in lanes:
        tram_lane = plan.tram_x is not None and abs(plan.tram_x - x_lane) < 0.5
        z = rng.uniform(6.0 if abs(x_lane) < 1 else Z_MIN + 1, 14.0)
        if tram_lane and rng.random() < 0.75:
            cast.add(z + 4, partial(draw_bus, ctx, plan.tram_x, z + 4, oncoming, tram=True))
            continue
        while z < z_max:
            if rng.random() < style.vehicles / 3.0:
                kind = str(rng.choice(["car", "truck", "bus"], p=[0.76, 0.12, 0.12]))
                x = x_lane + rng.uniform(-0.35, 0.35)
                fn = {"car": draw_car, "truck": draw_truck, "bus": draw_bus}[kind]
                if kind not in left_out:
                    cast.add(z, partial(fn, ctx, x, z, oncoming), partial(draw_vehicle_shadow, ctx, kind, x, z))
                z += {"car": 4.9, "truck": 11.0, "bus": 13.0}[kind]
            z += rng.uniform(3.0, 14.0)
    for s in plan.strips_of("parking"):
        x_c = s.centre
        z = rng.uniform(Z_MIN + 1, 8)
        while z < min(z_max, 80.0):
            r = rng.random()
            if r < 0.6:
                if "car" not in left_out:
                    cast.add(
                        z,
                        partial(draw_car, ctx, x_c, z, bool(rng.random() < 0.3)),
                        partial(draw_vehicle_shadow, ctx, "car", x_c, z),
                    )
            elif r < 0.7:
                cast.add(z, partial(draw_motorcycle, ctx, x_c, z, 0.0, None))
            z += rng.uniform(5.2, 7.5)


def _people(ctx: DrawContext, plan: StreetPlan, style: DomainStyle, cast: _Cast, z_max: float) -> None:
    rng = ctx.rng
    walks = plan.strips_of("sidewalk")
    for _ in range(rng.poisson(style.persons)):
        if plan.crossings and rng.random() < 0.2:
            c = plan.crossings[0]
            x, z, y = rng.uniform(*plan.road_x), rng.uniform(c.z, c.z + c.depth), 0.0
        else:
            s = walks[int(rng.integers(len(walks)))]
            x = rng.uniform(s.x0 + 0.3, s.x1 - 0.3)
            z_in = _in_view_z(ctx, x) * rng.uniform(0.6, 1.0)  # some only partly in the picture
            z, y = rng.uniform(z_in, max(z_in + 1.0, min(z_max, 45.0))), CURB_HEIGHT
        if not (plan.in_side_street(z) and y > 0):
            cast.add(z, partial(draw_walker, ctx, x, z, y, outfit(rng), rng.uniform(0, 2 * np.pi)))
    bike_lanes = plan.strips_of("bike")
    for _ in range(rng.poisson(style.riders)):
        kind = str(rng.choice(["bicycle", "motorcycle", "scooter"], p=[0.55, 0.3, 0.15]))
        z = rng.uniform(Z_MIN + 2, min(z_max, 50.0))
        if kind == "motorcycle":
            lane = plan.lane_centres(own=True) + plan.lane_centres(own=False)
            x = lane[int(rng.integers(len(lane)))] + rng.uniform(-0.6, 0.6)
            cast.add(z, partial(draw_motorcycle, ctx, x, z, 0.0, outfit(rng, helmet=True)))
            continue
        if bike_lanes:
            s = bike_lanes[int(rng.integers(len(bike_lanes)))]
            x = rng.uniform(s.x0 + 0.3, s.x1 - 0.3)
        else:
            x = plan.road_x[1] - rng.uniform(0.6, 1.2)
        if kind == "bicycle":
            cast.add(z, partial(draw_bicycle, ctx, x, z, 0.0, outfit(rng, helmet=bool(rng.random() < 0.5))))
        else:
            cast.add(z, partial(draw_scooter_rider, ctx, x, z, 0.0, outfit(rng)))
    for _ in range(rng.poisson(0.7)):
        s = walks[int(rng.integers(len(walks)))]
        z = rng.uniform(Z_MIN, 40.0)
        cast.add(z, partial(draw_bicycle, ctx, rng.uniform(s.x0 + 0.3, s.x1 - 0.3), z, CURB_HEIGHT, None))


def _furniture(ctx: DrawContext, plan: StreetPlan, style: DomainStyle, cast: _Cast, z_max: float) -> None:
    rng = ctx.rng
    signless = rng.random() < style.signless
    sized = style.sign_boxes is not None  # GTSDB-like sign sizes: sized_signs places the posts
    for side in (-1, 1):
        walk = _sidewalk(plan, side)
        terrain = [s for s in plan.strips_of("terrain") + plan.strips_of("median") if np.sign(s.centre) == side]
        if rng.random() < style.trees:
            spots = terrain or ([walk] if walk else [])
            if spots:
                z = rng.uniform(Z_MIN, 10)
                step = rng.uniform(7, 14)
                while z < min(z_max, 90.0):
                    s = spots[int(rng.integers(len(spots)))]
                    x = s.centre if s.kind != "sidewalk" else (s.x0 + 0.6 if side > 0 else s.x1 - 0.6)
                    if not plan.in_side_street(z, 1.0):
                        cast.add(z, partial(draw_tree, ctx, x, z, CURB_HEIGHT))
                    z += step * rng.uniform(0.8, 1.2)
        if walk is None or signless or sized:
            continue
        curb_x = walk.x0 + 0.4 if side > 0 else walk.x1 - 0.4
        n = rng.poisson(rng.uniform(*style.signs) * (1.0 if side > 0 else 0.6))
        for _ in range(n):
            near = rng.random() < style.sign_near
            z_in = _in_view_z(ctx, curb_x)  # "near" still means inside the picture
            z = rng.uniform(z_in, z_in + 12.0) if near else rng.uniform(z_in, max(z_in + 1, min(z_max, 70.0)))
            if plan.in_side_street(z, 1.0):
                continue
            facing_p = 0.92 if side > 0 else 0.35
            specs = [SignSpec(_random_sign(rng), bool(rng.random() < facing_p))]
            if rng.random() < 0.35:
                specs.append(SignSpec(_random_sign(rng), bool(rng.random() < facing_p)))
            x = curb_x + side * rng.uniform(0, 0.3)
            cast.add(z, partial(draw_sign_post, ctx, x, z, CURB_HEIGHT, specs))
        if rng.random() < 0.3:
            lo = max(8.0, _in_view_z(ctx, curb_x))
            z = rng.uniform(lo, max(lo + 1.0, min(z_max, 45.0)))
            facing = bool(rng.random() < (0.85 if side > 0 else 0.4))
            specs = [SignSpec(_random_sign(rng), facing) for _ in range(int(rng.integers(1, 3)))]
            cast.add(z, partial(draw_sign_frame, ctx, curb_x + side * 0.5, z, CURB_HEIGHT, specs))
    if sized and not signless:
        spots = {
            side: [s for s in plan.strips if s.kind in POST_STRIPS and np.sign(s.centre) == side] for side in (-1, 1)
        }
        place_sized_signs(ctx, plan, style, cast.add, spots, z_max)
    _traffic_lights(ctx, plan, cast, z_max)


def _traffic_lights(ctx: DrawContext, plan: StreetPlan, cast: _Cast, z_max: float) -> None:
    rng = ctx.rng
    if plan.crossings:
        z_light = plan.crossings[0].z + plan.crossings[0].depth + 0.8
    elif rng.random() < 0.3:
        z_light = rng.uniform(15, 50)
    else:
        return
    if z_light > z_max:
        return
    for side in (-1, 1):
        walk = _sidewalk(plan, side)
        if walk is None or rng.random() > 0.85:
            continue
        x = walk.x0 + 0.4 if side > 0 else walk.x1 - 0.4
        arm = None
        if side > 0 and rng.random() < 0.4:
            arm = plan.centre_x + plan.lane_width * 0.5
        facing = side > 0 or rng.random() < 0.5
        cast.add(z_light, partial(draw_traffic_light, ctx, x, z_light, CURB_HEIGHT, facing, arm))
        # The heads across the junction, seen from behind.
        if rng.random() < 0.5:
            zb = z_light + rng.uniform(8, 14)
            cast.add(zb, partial(draw_traffic_light, ctx, x, zb, CURB_HEIGHT, False, None))
