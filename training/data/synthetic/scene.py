"""Render one procedural street scene with exact Mapillary Vistas v1.2 ground truth.

`render_scene(height, width, seed, domain)` is deterministic: the same arguments give
byte-identical arrays at any resolution. Geometry is metric and projected by a camera
whose field of view scales with the image, so a scene keeps its layout at any size.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from . import colors
from .appearance import develop, paint_sky
from .camera import Camera, to_fixed
from .canvas import Canvas, Instance
from .context import DrawContext, L
from .domains import DOMAINS, DomainStyle
from .facades import draw_facades, plan_facades
from .population import populate
from .sign_boxes import SignBoxes
from .street import StreetPlan, draw_far_ground, draw_ground, draw_skyline, plan_street

__all__ = ["Instance", "Scene", "render_scene"]

SKYLINE_Z = 320.0


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered image and its exact truth.

    labels: Vistas v1.2 ids (uint8). instance_map: 0 where no instance, else an id of
    `instances` (int32); every pixel of an instance carries that instance's label.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8
    instance_map: np.ndarray  # (H, W) int32
    instances: tuple[Instance, ...]
    domain: str
    seed: int
    sign_boxes: SignBoxes | None = None  # the domain's sign box sizes (which signs a GTSDB writer boxes)

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])

    def sign_classes(self) -> np.ndarray:
        """GTSDB class of every front-sign pixel, 255 elsewhere (uint8)."""
        lut = np.full(max((i.id for i in self.instances), default=0) + 1, 255, np.uint8)
        for inst in self.instances:
            if inst.gtsdb_class is not None:
                lut[inst.id] = inst.gtsdb_class
        return lut[self.instance_map]


def _camera(rng: np.random.Generator, style: DomainStyle, height: int, width: int) -> Camera:
    return Camera(
        width=width,
        height=height,
        focal=rng.uniform(*style.focal) * width,
        cx=width * (0.5 + rng.uniform(-0.05, 0.05)),
        horizon=height * rng.uniform(*style.horizon),
        height_m=rng.uniform(*style.camera_height),
        curvature=rng.uniform(*style.curvature),
    )


def _sun_shadows(ctx: DrawContext, plan: StreetPlan, z0: float) -> None:
    """Shadow of the facades on the sun-facing-away side across part of the street."""
    side = plan.shadow_side
    if side == 0:
        return
    fx = plan.facade_x[0 if side < 0 else 1]
    width = ctx.rng.uniform(2.0, 12.0)
    lo, hi = sorted((fx, fx - side * width))
    ctx.canvas.shadow([ctx.ground(lo, hi, z0, plan.z_far, 0.1, n=24)], ctx.rng.uniform(0.45, 0.75))


def _ego_vehicle(ctx: DrawContext, style: DomainStyle) -> None:
    """Cityscapes-like bonnet along the bottom edge; sometimes a camera mount instead."""
    rng, canvas = ctx.rng, ctx.canvas
    h, w = canvas.height, canvas.width
    if rng.random() < style.ego_vehicle:
        top = h * rng.uniform(0.85, 0.92)
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = top + (h - top) * 0.6 * ((xs - w / 2) / (w * 0.6)) ** 2
        pts = to_fixed(np.concatenate([xs, [w * 1.05, -0.05 * w]]), np.concatenate([ys, [h + 2, h + 2]]))
        paint = colors.pick(rng, colors.CAR_PAINTS, 0.05)
        canvas.fill([pts], colors.scale(paint, 0.7), L["void--ego-vehicle"])
        glint = to_fixed(xs[6:18], ys[6:18] + (h - top) * 0.15)
        canvas.lines([glint], colors.mix(paint, (230, 230, 230), 0.4), L["void--ego-vehicle"], max(1.0, h / 200))
    elif rng.random() < style.car_mount:
        cx = w * rng.uniform(0.3, 0.7)
        mw, mh = w * rng.uniform(0.05, 0.12), h * rng.uniform(0.05, 0.1)
        pts = to_fixed([cx - mw, cx + mw, cx + mw * 0.6, cx - mw * 0.6], [h + 1, h + 1, h - mh, h - mh])
        canvas.fill([pts], colors.grey(rng, 15, 45, 3), L["void--car-mount"])


def render_scene(height: int, width: int, seed: int, domain: str | DomainStyle = "cityscapes") -> Scene:
    """Render a street scene of the given size; deterministic in (height, width, seed, domain)."""
    if height < 8 or width < 8:
        raise ValueError(f"scene too small: {width}x{height}")
    style = DOMAINS[domain] if isinstance(domain, str) else domain
    rng = np.random.default_rng([int(seed), zlib.crc32(style.name.encode())])
    camera = _camera(rng, style, height, width)
    canvas = Canvas(height, width)
    haze = paint_sky(canvas, camera.horizon, rng)
    ctx = DrawContext(canvas, camera, rng, haze, rng.uniform(150.0, 600.0))
    plan = plan_street(rng, SKYLINE_Z)
    draw_far_ground(ctx, plan)
    if not plan.street_end:
        draw_skyline(ctx, plan)
    draw_ground(ctx, plan)
    draw_facades(ctx, plan, plan_facades(rng, plan))
    actors = populate(ctx, plan, style)
    _sun_shadows(ctx, plan, camera.ground_z_range(plan.z_far)[0])
    for actor in actors:
        if actor.shadow is not None:
            actor.shadow()
    canvas.apply_ground_shade()
    for actor in actors:
        actor.draw()
    _ego_vehicle(ctx, style)
    instances = canvas.finish()
    image = develop(canvas, style, rng)
    return Scene(image, canvas.labels, canvas.instances, instances, style.name, int(seed), style.sign_boxes)
