"""Procedural street scenes written in the formats of the real datasets hiseg_ros trains on.

No real dataset can be downloaded here, so the project renders its own: deterministic
by seed, at any resolution, with exact Mapillary Vistas v1.2 ground truth, written as
Cityscapes, Mapillary Vistas v1.2, GTSDB and OpenScapes / Open Images style datasets
(docs/DATASET_FORMATS.md). Command: ``python -m training.data.synthetic --out DIR``.
"""

from .canvas import Instance
from .generate import (
    DATASETS,
    PRESETS,
    DatasetSummary,
    GenerationSummary,
    generate,
    image_seed,
    iter_scenes,
    plan_tasks,
    task_style,
)
from .scene import Scene, render_scene
from .sign_boxes import GTSDB_SIGN_BOXES, SignBoxes
from .signs import IMPLEMENTED_CLASSES
from .writers import (
    CITYSCAPES_FROM_VISTAS,
    VISTAS_TO_CITYSCAPES,
    gtsdb_boxed,
    write_cityscapes,
    write_gtsdb,
    write_openscapes,
    write_vistas,
)

__all__ = [
    "CITYSCAPES_FROM_VISTAS",
    "DATASETS",
    "GTSDB_SIGN_BOXES",
    "IMPLEMENTED_CLASSES",
    "PRESETS",
    "VISTAS_TO_CITYSCAPES",
    "DatasetSummary",
    "GenerationSummary",
    "Instance",
    "Scene",
    "SignBoxes",
    "generate",
    "gtsdb_boxed",
    "image_seed",
    "iter_scenes",
    "plan_tasks",
    "render_scene",
    "task_style",
    "write_cityscapes",
    "write_gtsdb",
    "write_openscapes",
    "write_vistas",
]
