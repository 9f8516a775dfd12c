"""The static street: layout plan, road surface with markings, sidewalks, skyline (facades: facades.py).

Drivable classes deliberately share asphalt greys (road, service lane, parking, bike
lane): what tells them apart is where they are (beside the curb, behind a median,
between parking bays) and what is painted on them, as in Mapillary Vistas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import colors
from .camera import quads
from .context import DrawContext, L

ROAD_LEVEL = ("road", "bike", "parking", "service")
CURB_HEIGHT = 0.15
STRIP_LABEL = {
    "road": L["construction--flat--road"],
    "bike": L["construction--flat--bike-lane"],
    "parking": L["construction--flat--parking"],
    "service": L["construction--flat--service-lane"],
    "median": L["nature--terrain"],
    "terrain": L["nature--terrain"],
    "sidewalk": L["construction--flat--sidewalk"],
}
MARKING = L["marking--general"]


@dataclass(frozen=True)
class Strip:
    kind: str
    x0: float
    x1: float

    @property
    def y(self) -> float:
        return 0.0 if self.kind in ROAD_LEVEL else CURB_HEIGHT

    @property
    def centre(self) -> float:
        return 0.5 * (self.x0 + self.x1)


@dataclass(frozen=True)
class Crossing:
    z: float
    depth: float
    kind: str  # "zebra" | "plain"


@dataclass
class StreetPlan:
    lane_width: float
    centre_x: float  # the line between oncoming and own lanes
    own_lanes: int
    oncoming_lanes: int
    strips: list[Strip]
    facade_x: tuple[float, float]  # left (negative), right (positive) facade planes
    z_far: float  # where the drawn street ends (skyline or a building across)
    street_end: bool
    crossings: list[Crossing]
    side_streets: list[tuple[float, float]]  # z ranges without facades / sidewalks
    tram_x: float | None
    road_color: colors.Color = (90, 90, 90)
    shadow_side: int = 0  # -1 / 1: that side's facades are in their own shadow; 0: overcast
    extras: dict = field(default_factory=dict)

    @property
    def road_x(self) -> tuple[float, float]:
        return (self.centre_x - self.oncoming_lanes * self.lane_width, self.centre_x + self.own_lanes * self.lane_width)

    def lane_centres(self, own: bool) -> list[float]:
        w = self.lane_width
        if own:
            return [self.centre_x + (k + 0.5) * w for k in range(self.own_lanes)]
        return [self.centre_x - (k + 0.5) * w for k in range(self.oncoming_lanes)]

    def strips_of(self, kind: str) -> list[Strip]:
        return [s for s in self.strips if s.kind == kind]

    def in_side_street(self, z: float, margin: float = 0.0) -> bool:
        return any(a - margin <= z <= b + margin for a, b in self.side_streets)


# -- planning ------------------------------------------------------------------------------
_SIDE_OPTIONS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.2),
    (("bike",), 0.2),
    (("parking",), 0.25),
    (("bike", "parking"), 0.15),
    (("median", "service"), 0.2),
)
_WIDTH = {
    "bike": (1.4, 2.0),
    "parking": (2.1, 2.6),
    "median": (1.2, 3.0),
    "service": (3.0, 3.8),
    "sidewalk": (2.2, 5.0),
    "terrain": (1.0, 3.0),
}


def plan_street(rng: np.random.Generator, z_far: float) -> StreetPlan:
    lane_w = rng.uniform(3.0, 3.6)
    own = int(rng.choice([1, 2, 2, 3]))
    oncoming = int(rng.choice([0, 1, 1, 2]))
    ego = int(rng.integers(own))
    centre = -(ego + 0.5) * lane_w + rng.uniform(-0.4, 0.4)
    road = Strip("road", centre - oncoming * lane_w, centre + own * lane_w)
    strips = [road]
    facades = []
    for side in (-1, 1):
        edge = road.x1 if side > 0 else road.x0
        probs = np.array([p for _, p in _SIDE_OPTIONS])
        kinds = list(_SIDE_OPTIONS[int(rng.choice(len(probs), p=probs / probs.sum()))][0])
        if rng.random() < 0.3:
            kinds.append("terrain")
        kinds.append("sidewalk")
        if rng.random() < 0.3:
            kinds.append("terrain")
        for kind in kinds:
            w = rng.uniform(*_WIDTH[kind])
            a, b = sorted((edge, edge + side * w))
            strips.append(Strip(kind, a, b))
            edge += side * w
        facades.append(edge)
    crossings = []
    if rng.random() < 0.85:
        z = rng.uniform(9, 45)
        kind = str(rng.choice(["zebra", "plain", "both"], p=[0.5, 0.3, 0.2]))
        if kind == "both":
            crossings.append(Crossing(z, rng.uniform(3, 5), "zebra"))
            crossings.append(Crossing(z + rng.uniform(15, 40), rng.uniform(2.5, 4), "plain"))
        else:
            crossings.append(Crossing(z, rng.uniform(3, 5), kind))
    side_streets = []
    if crossings and rng.random() < 0.5:
        c = crossings[0]
        side_streets.append((c.z + c.depth + 0.5, c.z + c.depth + 0.5 + rng.uniform(7, 12)))
    street_end = rng.random() < 0.3
    if street_end:
        z_far = rng.uniform(60, 160)
    tram_x = None
    if rng.random() < 0.2 and own >= 1:
        tram_x = centre + (own - 0.5) * lane_w if own > 1 or oncoming == 0 else centre + 0.5 * lane_w
    road_color = colors.grey(rng, 55, 115, 5)
    shadow_side = 0 if rng.random() < 0.35 else (-1 if rng.random() < 0.5 else 1)
    return StreetPlan(
        lane_w,
        centre,
        own,
        oncoming,
        sorted(strips, key=lambda s: s.x0),
        (facades[0], facades[1]),
        z_far,
        street_end,
        crossings,
        side_streets,
        tram_x,
        road_color,
        shadow_side,
    )


# -- drawing: sky and far background --------------------------------------------------------
def draw_far_ground(ctx: DrawContext, plan: StreetPlan) -> None:
    """Terrain out to the skyline so no sky shows below the horizon between facades."""
    col = ctx.tone(colors.hsv(ctx.rng, (0.18, 0.3), (0.2, 0.5), (0.3, 0.55)), plan.z_far)
    ctx.canvas.fill([ctx.ground(-2000, 2000, 20, plan.z_far)], col, L["nature--terrain"])


def draw_skyline(ctx: DrawContext, plan: StreetPlan) -> None:
    """Distant buildings and tree lines where the street meets the horizon."""
    rng, z = ctx.rng, plan.z_far
    builds, trees = [], []
    x = -z * 1.5
    while x < z * 1.5:
        w = rng.uniform(8, 40)
        h = rng.uniform(3, 30) if rng.random() < 0.7 else rng.uniform(2, 10)
        (builds if rng.random() < 0.65 else trees).append((x, x + w, h))
        x += w
    for x0, x1, h in builds:
        col = ctx.tone(colors.grey(rng, 70, 170, 10), z * 0.8)
        ctx.canvas.fill([ctx.front(x0, x1, -1.0, h, z)], col, L["construction--structure--building"])
    for x0, x1, h in trees:
        col = ctx.tone(colors.hsv(rng, (0.2, 0.35), (0.3, 0.6), (0.2, 0.45)), z * 0.8)
        polys = [
            ctx.blob(xc, h * 0.6, z, (x1 - x0) * 0.35, h * 0.6, 0.2)
            for xc in np.arange(x0, x1, max((x1 - x0) / 3, 1.0))
        ]
        ctx.canvas.fill(polys, col, L["nature--vegetation"])


# -- drawing: road surface ------------------------------------------------------------------
def _surface_color(ctx: DrawContext, plan: StreetPlan, kind: str) -> colors.Color:
    rng = ctx.rng
    road = plan.road_color
    if kind == "road":
        return road
    if kind in ("service", "parking"):
        return colors.jitter(rng, road, 0.06) if rng.random() < 0.7 else colors.grey(rng, 80, 140, 8)
    if kind == "bike":
        return (
            colors.hsv(rng, (0.97, 1.03), (0.3, 0.55), (0.4, 0.6))
            if rng.random() < 0.5
            else colors.jitter(rng, road, 0.05)
        )
    if kind == "sidewalk":
        return (
            colors.grey(rng, 110, 190, 12)
            if rng.random() < 0.7
            else colors.hsv(rng, (0.0, 0.1), (0.15, 0.4), (0.45, 0.7))
        )
    return (
        colors.hsv(rng, (0.15, 0.3), (0.3, 0.65), (0.3, 0.6))
        if rng.random() < 0.8
        else colors.hsv(rng, (0.06, 0.1), (0.3, 0.5), (0.3, 0.5))
    )


def draw_ground(ctx: DrawContext, plan: StreetPlan) -> None:
    cam, canvas, rng = ctx.camera, ctx.canvas, ctx.rng
    z0, z1 = cam.ground_z_range(plan.z_far)
    for s in plan.strips:
        col = _surface_color(ctx, plan, s.kind)
        canvas.fill([ctx.ground(s.x0, s.x1, z0, z1, s.y)], col, STRIP_LABEL[s.kind])
        if s.kind == "sidewalk":
            _paving(ctx, s, z0, col)
    _curbs(ctx, plan, z0, z1)
    for za, zb in plan.side_streets:
        for lo, hi in ((-400, plan.road_x[0]), (plan.road_x[1], 400)):
            canvas.fill(
                [ctx.ground(lo, hi, za, zb)], colors.jitter(rng, plan.road_color, 0.03), L["construction--flat--road"]
            )
    _markings(ctx, plan, z0, z1)
    for c in plan.crossings:
        _crossing(ctx, plan, c)
    if plan.tram_x is not None:
        _rails(ctx, plan, z0, z1)
    _road_furniture(ctx, plan, z0)


def _paving(ctx: DrawContext, s: Strip, z0: float, col: colors.Color) -> None:
    """Tile joints: darker lines across and along the sidewalk, only where they resolve."""
    z_max = min(ctx.camera.focal * 0.25, 60.0)
    if z_max <= z0:
        return
    line = colors.scale(col, ctx.rng.uniform(0.75, 0.9))
    step = ctx.rng.uniform(0.6, 1.5)
    zs = np.arange(z0 + ctx.rng.uniform(0, step), z_max, step)[:, None]
    xs = np.arange(s.x0 + step, s.x1, step)[:, None]
    polys = quads(ctx.camera, np.hstack([np.full_like(zs, s.x0), np.full_like(zs, s.x1)]), s.y, np.hstack([zs, zs]))
    polys += quads(ctx.camera, np.hstack([xs, xs]), s.y, np.array([[z0, z_max]]))
    ctx.canvas.lines(polys, line, L["construction--flat--sidewalk"], 1)


def _curbs(ctx: DrawContext, plan: StreetPlan, z0: float, z1: float) -> None:
    curb = L["construction--barrier--curb"]
    col = colors.grey(ctx.rng, 140, 205, 6)
    for a, b in zip(plan.strips[:-1], plan.strips[1:], strict=True):
        if (a.y == 0.0) == (b.y == 0.0):
            continue
        x = a.x1
        high_right = b.y > a.y  # the elevated side is at larger x
        top = (x, x + 0.2) if high_right else (x - 0.2, x)
        ctx.canvas.fill([ctx.ground(top[0], top[1], z0, z1, CURB_HEIGHT)], col, curb)
        # The vertical face shows only when it faces the camera (low side toward X = 0).
        if (high_right and x > 0) or (not high_right and x < 0):
            ctx.canvas.fill([ctx.wall(x, z0, z1, 0.0, CURB_HEIGHT)], colors.scale(col, 0.8), curb)


def _rails(ctx: DrawContext, plan: StreetPlan, z0: float, z1: float) -> None:
    x = plan.tram_x
    bed = colors.scale(plan.road_color, ctx.rng.uniform(0.8, 1.15))
    track = L["construction--flat--rail-track"]
    ctx.canvas.fill([ctx.ground(x - 0.95, x + 0.95, z0, z1)], bed, track)
    steel = colors.grey(ctx.rng, 150, 200, 4)
    ctx.canvas.fill([ctx.ground(r - 0.04, r + 0.04, z0, z1) for r in (x - 0.72, x + 0.72)], steel, track)


def _dashes(ctx: DrawContext, x: float, w: float, z0: float, z1: float, dash: float, gap: float):
    start = z0 - ctx.rng.uniform(0, dash + gap)
    za = np.arange(start, min(z1, 150.0), dash + gap)
    za = za[za + dash > z0]
    return ctx.ground_quads(x - w / 2, x + w / 2, np.maximum(za, z0), za + dash)


def _markings(ctx: DrawContext, plan: StreetPlan, z0: float, z1: float) -> None:
    rng = ctx.rng
    paint = colors.grey(rng, 190, 245, 6)
    polys = []
    w = plan.lane_width
    for k in range(1, plan.own_lanes):
        polys += _dashes(ctx, plan.centre_x + k * w, 0.12, z0, z1, 3.0, 6.0)
    for k in range(1, plan.oncoming_lanes):
        polys += _dashes(ctx, plan.centre_x - k * w, 0.12, z0, z1, 3.0, 6.0)
    if plan.oncoming_lanes:
        style = rng.choice(["dashed", "solid", "double"], p=[0.5, 0.3, 0.2])
        cx = plan.centre_x
        if style == "dashed":
            polys += _dashes(ctx, cx, 0.12, z0, z1, 3.0, 6.0)
        elif style == "solid":
            polys.append(ctx.ground(cx - 0.06, cx + 0.06, z0, z1))
        else:
            polys += [ctx.ground(cx + d - 0.06, cx + d + 0.06, z0, z1) for d in (-0.15, 0.15)]
    for x in plan.road_x:
        if rng.random() < 0.7:
            polys.append(ctx.ground(x - 0.08 if x > 0 else x, x if x > 0 else x + 0.08, z0, z1))
    for s in plan.strips_of("bike"):
        inner = s.x0 if s.centre > 0 else s.x1
        polys.append(ctx.ground(inner - 0.12, inner + 0.12, z0, z1))
    for s in plan.strips_of("parking"):
        start = z0 + rng.uniform(0, 5.5)
        zs = np.arange(start, min(z1, 80.0), 5.5)
        polys += ctx.ground_quads(s.x0, s.x1, zs, zs + 0.12)
    for c in plan.crossings[:1]:
        a, b = plan.centre_x, plan.road_x[1]
        polys.append(ctx.ground(a, b, c.z - 1.0, c.z - 0.6, n=2))  # stop line
        if rng.random() < 0.6:
            for lx in plan.lane_centres(own=True):
                polys += _arrow(ctx, lx, c.z - rng.uniform(8, 14))
    ctx.canvas.fill(polys, paint, MARKING)


def _arrow(ctx: DrawContext, x: float, z: float) -> list[np.ndarray]:
    """Straight-ahead arrow painted on a lane (ground coordinates)."""
    shaft = ctx.ground(x - 0.08, x + 0.08, z, z + 3.5, n=2)
    head = ctx.camera.polygon([x - 0.35, x + 0.35, x], 0.0, [z + 3.5, z + 3.5, z + 5.0])
    return [shaft, head]


def _crossing(ctx: DrawContext, plan: StreetPlan, c: Crossing) -> None:
    rng, canvas = ctx.rng, ctx.canvas
    lo, hi = plan.road_x
    if c.kind == "zebra":
        canvas.fill([ctx.ground(lo, hi, c.z, c.z + c.depth, n=2)], plan.road_color, L["construction--flat--road"])
        iid = canvas.begin(L["marking--crosswalk-zebra"])
        width, gap = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.7)
        xs = np.arange(lo + 0.2, hi - width, width + gap)
        polys = ctx.ground_quads(xs, xs + width, c.z, c.z + c.depth)
        canvas.fill(polys, colors.grey(rng, 185, 245, 5), L["marking--crosswalk-zebra"], iid)
        canvas.end(iid)
    else:
        iid = canvas.begin(L["construction--flat--crosswalk-plain"])
        col = (
            colors.jitter(rng, plan.road_color, 0.05)
            if rng.random() < 0.5
            else colors.hsv(rng, (0.0, 0.08), (0.2, 0.5), (0.35, 0.6))
        )
        canvas.fill([ctx.ground(lo, hi, c.z, c.z + c.depth, n=2)], col, L["construction--flat--crosswalk-plain"], iid)
        canvas.end(iid)
        paint = colors.grey(rng, 190, 240, 5)
        canvas.fill([ctx.ground(lo, hi, z, z + 0.15, n=2) for z in (c.z - 0.15, c.z + c.depth)], paint, MARKING)


def _road_furniture(ctx: DrawContext, plan: StreetPlan, z0: float) -> None:
    """Manholes, catch basins and potholes: small dark shapes that only context names."""
    rng, canvas = ctx.rng, ctx.canvas
    rx0, rx1 = plan.road_x
    for _ in range(rng.poisson(1.6)):
        x, z = rng.uniform(rx0 + 0.5, rx1 - 0.5), rng.uniform(max(z0, 4), max(z0, 4) + 36)
        iid = canvas.begin(L["object--manhole"])
        metal = ctx.tone(colors.grey(rng, 40, 95, 6), z)
        r = rng.uniform(0.3, 0.4)
        canvas.fill([ctx.ground_blob(x, z, r, r)], metal, L["object--manhole"], iid)
        canvas.fill([ctx.ground_blob(x, z, r * 0.75, r * 0.75)], colors.scale(metal, 1.2), L["object--manhole"], iid)
        canvas.end(iid)
    curbs = [x for x in plan.road_x if abs(x) > 0.5]
    for _ in range(rng.poisson(1.4)):
        x_edge = curbs[int(rng.integers(len(curbs)))]
        x = x_edge - np.sign(x_edge) * 0.35
        z = rng.uniform(max(z0, 4), max(z0, 4) + 31)
        iid = canvas.begin(L["object--catch-basin"])
        grate = ctx.tone(colors.grey(rng, 25, 70, 4), z)
        canvas.fill([ctx.ground(x - 0.25, x + 0.25, z, z + 0.5, n=2)], grate, L["object--catch-basin"], iid)
        zz = np.arange(z + 0.06, z + 0.45, 0.1)
        bars = ctx.ground_quads(x - 0.2, x + 0.2, zz, zz + 0.04)
        canvas.fill(bars, colors.scale(grate, 1.6), L["object--catch-basin"], iid)
        canvas.end(iid)
    for _ in range(rng.poisson(0.9)):
        x, z = rng.uniform(rx0 + 0.3, rx1 - 0.3), rng.uniform(max(z0, 4), max(z0, 4) + 26)
        hole = colors.scale(plan.road_color, rng.uniform(0.45, 0.7))
        canvas.fill(
            [ctx.ground_blob(x, z, rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.5), 0.35)], hole, L["object--pothole"]
        )
