"""Per-dataset "domains": camera rig, colour grading and scene statistics.

Real multi-dataset training mixes cameras that differ in mounting height, field of
view, aspect and colour processing; giving each synthetic dataset its own style keeps
that domain gap in the synthetic setting too.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sign_boxes import GTSDB_SIGN_BOXES, SignBoxes

Range = tuple[float, float]


@dataclass(frozen=True)
class DomainStyle:
    name: str
    aspects: tuple[float, ...]  # width / height choices for datasets with varying sizes
    camera_height: Range  # metres
    horizon: Range  # fraction of image height
    focal: Range  # fraction of image width
    curvature: Range  # 1/m, see Camera.curvature
    gain: Range  # global exposure
    gamma: Range
    saturation: Range
    tint: float  # per-channel white-balance spread
    warmth: float  # constant red-up / blue-down bias (>0 warm)
    blur: Range  # Gaussian sigma at 512 px image height (scaled with resolution)
    noise: Range  # sensor noise sigma (0..255)
    vignette: Range
    ego_vehicle: float  # probability of the ego hood at the bottom (Cityscapes style)
    car_mount: float  # probability of a visible camera mount
    signs: Range  # expected sign posts per side (right, left scaled by 0.6)
    persons: float  # expected walking persons
    riders: float  # expected riders
    vehicles: float  # expected moving vehicles per lane
    sign_near: float  # fraction of sign posts placed close to the camera (big signs)
    signless: float = 0.0  # probability of an image without any sign post
    trees: float = 0.6  # probability of a row of trees along each side
    # GTSDB-like sign boxes (sized_signs.py): sizes drawn from this distribution, about
    # ``signs_per_image`` fronts placed per image (a preset may change it), classes uniform; `signs`
    # and `sign_near` are then unused. None: sign posts at random depths (`signs`, `sign_near`).
    sign_boxes: SignBoxes | None = None
    signs_per_image: float = 0.0
    # Opt-in (``--absent-vehicles``): each of these vehicle kinds is left out of a whole image with
    # this probability, so a tag set's vehicle tags are absent from a good share of its images and
    # say something about the picture. 0 = every kind may appear (the default output, unchanged).
    absent_vehicles: float = 0.0


DOMAINS: dict[str, DomainStyle] = {
    "cityscapes": DomainStyle(
        name="cityscapes",
        aspects=(2.0,),
        camera_height=(1.15, 1.3),
        horizon=(0.40, 0.46),
        focal=(0.95, 1.15),
        curvature=(-2e-4, 2e-4),
        gain=(0.8, 1.05),
        gamma=(1.0, 1.2),
        saturation=(0.6, 0.8),
        tint=0.03,
        warmth=-0.01,
        blur=(0.7, 1.0),
        noise=(1.0, 2.5),
        vignette=(0.05, 0.15),
        ego_vehicle=1.0,
        car_mount=0.0,
        signs=(1.0, 2.5),
        persons=4.0,
        riders=1.0,
        vehicles=1.4,
        sign_near=0.25,
    ),
    "vistas": DomainStyle(
        name="vistas",
        aspects=(4 / 3, 3 / 2, 16 / 9, 16 / 10, 1.0),
        camera_height=(1.1, 2.6),
        horizon=(0.35, 0.6),
        focal=(0.6, 1.2),
        curvature=(-4e-4, 4e-4),
        gain=(0.6, 1.3),
        gamma=(0.8, 1.25),
        saturation=(0.9, 1.3),
        tint=0.08,
        warmth=0.0,
        blur=(0.4, 1.2),
        noise=(1.0, 4.0),
        vignette=(0.0, 0.3),
        ego_vehicle=0.15,
        car_mount=0.15,
        signs=(1.0, 3.0),
        persons=4.0,
        riders=1.2,
        vehicles=1.2,
        sign_near=0.3,
    ),
    "gtsdb": DomainStyle(
        name="gtsdb",
        aspects=(1.7,),
        camera_height=(1.3, 1.5),
        horizon=(0.45, 0.52),
        focal=(0.9, 1.1),
        curvature=(-3e-4, 3e-4),
        gain=(0.5, 1.0),
        gamma=(1.1, 1.4),
        saturation=(0.8, 1.0),
        tint=0.04,
        warmth=0.02,
        blur=(0.8, 1.3),
        noise=(2.0, 5.0),
        vignette=(0.1, 0.25),
        ego_vehicle=0.0,
        car_mount=0.0,
        signs=(3.0, 5.5),
        persons=2.0,
        riders=0.6,
        vehicles=1.0,
        sign_near=0.7,
        signless=0.12,
        trees=0.3,
        sign_boxes=GTSDB_SIGN_BOXES,
        signs_per_image=6.0,
    ),
    "openscapes": DomainStyle(
        name="openscapes",
        aspects=(4 / 3, 3 / 2, 16 / 9, 3 / 4, 1.0),
        camera_height=(1.4, 1.8),
        horizon=(0.4, 0.6),
        focal=(0.6, 1.0),
        curvature=(-3e-4, 3e-4),
        gain=(0.8, 1.3),
        gamma=(0.85, 1.1),
        saturation=(1.0, 1.3),
        tint=0.06,
        warmth=0.04,
        blur=(0.3, 0.8),
        noise=(0.5, 2.5),
        vignette=(0.0, 0.2),
        ego_vehicle=0.0,
        car_mount=0.0,
        signs=(1.0, 2.5),
        persons=6.0,
        riders=1.2,
        vehicles=1.3,
        sign_near=0.3,
    ),
}
