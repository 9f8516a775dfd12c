"""The checkpoint contract between training, the exporter and the PyTorch backend.

A checkpoint is a ``torch.save``'d dict (read with ``weights_only=True``: tensors, strings, numbers,
lists, dicts and numpy arrays / scalars only, so loading a file never runs code) with at least these
keys:

``"model"``
    ``HierarchicalSegNet.state_dict()`` (a DistributedDataParallel ``module.`` prefix is accepted).
``"hierarchy"``
    ``Hierarchy.to_json()`` of the hierarchy the network was built for (a string).
``"model_config"``
    ``{"backbone": str, "output_stride": int, "shared_channels": int, "adaptation_depth": int,
    "adaptation_dilation": int}``: everything besides the hierarchy needed to rebuild the network.
    Unknown keys are an error: a silently ignored key could mean a different architecture.

Any further keys (optimiser, schedule, RNG, iteration, ...) belong to the training loop and are
ignored here. :func:`checkpoint_dict` / :func:`save_checkpoint` write this format.

Why a separate contract: the exporter (``training.export``) and the node's PyTorch backend must
rebuild exactly the trained network from the file alone, and the node must not import ``training``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_output
from ..hierarchy import Hierarchy, HierarchyError
from ..model import BACKBONES, HierarchicalSegNet

__all__ = [
    "CHECKPOINT_KEYS",
    "CheckpointFormatError",
    "LoadedCheckpoint",
    "ModelConfig",
    "checkpoint_dict",
    "describe_hierarchy_difference",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_KEYS = ("model", "hierarchy", "model_config")


class CheckpointFormatError(ValueError):
    """A checkpoint does not follow the contract; the message starts with the file's path."""


@dataclass(frozen=True)
class ModelConfig:
    """Network configuration besides the hierarchy (the ``model_config`` entry)."""

    backbone: str = "mobilenet_v2"
    output_stride: int = 16
    shared_channels: int = 256
    adaptation_depth: int = 1
    adaptation_dilation: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> ModelConfig:
        if not isinstance(data, Mapping):
            raise CheckpointFormatError(f"{source}: model_config: expected a dict, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(str(k) for k in data if k not in names)
        if missing or unknown:
            parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
            raise CheckpointFormatError(f"{source}: model_config: {'; '.join(parts)} (expected keys {names})")
        if data["backbone"] not in BACKBONES:
            raise CheckpointFormatError(
                f"{source}: model_config.backbone: {data['backbone']!r} is not one of {list(BACKBONES)}"
            )
        for name in names[1:]:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CheckpointFormatError(f"{source}: model_config.{name}: expected an integer >= 0, got {value!r}")
        return cls(**{n: data[n] for n in names})

    def build(self, hierarchy: Hierarchy, pretrained: str | Path | None = None) -> HierarchicalSegNet:
        """The network for ``hierarchy``; random unless ``pretrained`` names backbone weights
        (loading a checkpoint overwrites them anyway)."""
        return HierarchicalSegNet(
            hierarchy.classifier_sizes,
            backbone=self.backbone,
            output_stride=self.output_stride,
            shared_channels=self.shared_channels,
            adaptation_depth=self.adaptation_depth,
            adaptation_dilation=self.adaptation_dilation,
            pretrained=pretrained,
        )


@dataclass
class LoadedCheckpoint:
    """A checkpoint turned back into its network (eval mode) and hierarchy."""

    path: Path
    net: HierarchicalSegNet
    hierarchy: Hierarchy
    config: ModelConfig
    sha256: str
    training_info: dict[str, Any] = field(default_factory=dict)  # scalar extras (iteration, ...) for provenance


def checkpoint_dict(net: HierarchicalSegNet, hierarchy: Hierarchy, config: ModelConfig) -> dict[str, Any]:
    """The three contract keys for ``net``; the training loop adds its own keys to this dict."""
    return {"model": net.state_dict(), "hierarchy": hierarchy.to_json(), "model_config": config.to_dict()}


def save_checkpoint(path: str | Path, net: HierarchicalSegNet, hierarchy: Hierarchy, config: ModelConfig) -> Path:
    """Write :func:`checkpoint_dict` atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(checkpoint_dict(net, hierarchy, config), tmp)
    return path


def describe_hierarchy_difference(ours: Hierarchy, theirs: Hierarchy) -> str:
    """A short human description of how two hierarchies differ (for mismatch errors)."""
    if ours.classifier_sizes != theirs.classifier_sizes:
        return f"classifiers {ours.classifier_sizes} vs {theirs.classifier_sizes}"
    a = [(c.name, c.id, c.parent) for c in ours.classes]
    b = [(c.name, c.id, c.parent) for c in theirs.classes]
    if a != b:
        diff = [f"{x} vs {y}" for x, y in zip(a, b, strict=False) if x != y][:3]
        return f"classes differ ({len(a)} vs {len(b)} classes; first differences: {diff})"
    if ours.name != theirs.name:
        return f"name {ours.name!r} vs {theirs.name!r}"
    return "colours, descriptions or dataset mappings differ"


def load_checkpoint(path: str | Path, expected_hierarchy: Hierarchy | None = None) -> LoadedCheckpoint:
    """Read a checkpoint of the contract above and rebuild its network (eval mode).

    ``expected_hierarchy``: refuse a checkpoint trained for any other hierarchy. Every problem is a
    :class:`CheckpointFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: checkpoint file does not exist")
    raw = path.read_bytes()
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickled module, not a torch file at all
        raise CheckpointFormatError(f"{path}: cannot read as a torch checkpoint: {exc}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{path}: expected a dict with keys {list(CHECKPOINT_KEYS)}, got {type(obj)}")
    missing = [k for k in CHECKPOINT_KEYS if k not in obj]
    if missing:
        raise CheckpointFormatError(
            f"{path}: checkpoint lacks key(s) {missing} (has {sorted(map(str, obj))}); "
            f"expected {list(CHECKPOINT_KEYS)}, see hiseg_ros.engines.checkpoint"
        )
    if not isinstance(obj["hierarchy"], str):
        raise CheckpointFormatError(f"{path}: 'hierarchy' must be the Hierarchy.to_json() string")
    try:
        hierarchy = Hierarchy.from_json(obj["hierarchy"], source=f"{path}: hierarchy")
    except HierarchyError as exc:
        raise CheckpointFormatError(f"{path}: corrupt hierarchy: {exc}") from None
    if expected_hierarchy is not None and hierarchy != expected_hierarchy:
        raise CheckpointFormatError(
            f"{path}: checkpoint was trained for hierarchy {hierarchy.name!r}, which does not match "
            f"{expected_hierarchy.name!r} from {expected_hierarchy.source}: "
            f"{describe_hierarchy_difference(hierarchy, expected_hierarchy)}"
        )
    config = ModelConfig.from_dict(obj["model_config"], path)
    state = obj["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{path}: 'model' must be a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    net = config.build(hierarchy)
    what = f"{path}: weights do not fit the network of model_config {config.to_dict()} and hierarchy {hierarchy.name!r}"
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointFormatError(f"{what}: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointFormatError(
            f"{what}: missing {_few(result.missing_keys)}, unexpected {_few(result.unexpected_keys)}"
        )
    extras = {str(k): v for k, v in obj.items() if k not in CHECKPOINT_KEYS and isinstance(v, int | float | str | bool)}
    return LoadedCheckpoint(path, net.eval(), hierarchy, config, hashlib.sha256(raw).hexdigest(), extras)


def _numpy_globals() -> list[Any]:
    """numpy arrays, scalars and dtypes, allowed in the ``weights_only`` unpickler: the training loop
    stores its numpy RNG state (and may store numpy metrics) in the checkpoint. They are rebuilt
    from bytes, no code runs, so the file still cannot execute anything when loaded."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtypes = {type(np.dtype(code)) for code in np.typecodes["All"]}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *sorted(dtypes, key=str)]


def _few(keys: list[str], limit: int = 6) -> str:
    return str(keys[:limit])[:-1] + (f", ... {len(keys)} in total]" if len(keys) > limit else "]")
