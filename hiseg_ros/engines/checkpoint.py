"""The checkpoint file: its format, the one writer and the one reader (training, exporter, node).

A checkpoint is a ``torch.save``'d dict read with ``weights_only=True``: tensors, strings, numbers,
``None`` and lists / tuples / dicts of them only, so loading a file never runs code. Keys:

``"model"``
    ``HierarchicalSegNet.state_dict()`` (a DistributedDataParallel ``module.`` prefix is accepted).
``"hierarchy"``
    ``Hierarchy.to_json()`` of the hierarchy the network was built for (a string).
``"model_config"``
    ``{"backbone": str, "output_stride": int, "shared_channels": int, "adaptation_depth": int,
    "adaptation_dilation": int[, "decoder": str]}``: everything besides the hierarchy needed to
    rebuild the network. Unknown keys are an error: a silently ignored key could mean a different
    architecture. ``decoder`` (:data:`hiseg_ros.model.DECODERS`) is written only when it is not
    ``"none"`` and read as ``"none"`` when absent, so files of the network without a decoder are
    the same as before the option existed, and a reader that predates it refuses the others.

These three (:data:`CHECKPOINT_KEYS`) are all the exporter and the node need. A checkpoint the
training loop writes also holds ``"format"`` (:data:`CHECKPOINT_FORMAT`) and the loop's state,
which ``--resume`` reads back (:data:`TRAINING_KEYS`): ``"iteration"`` (completed iterations),
``"world_size"``, ``"optimizer"`` / ``"scheduler"`` / ``"scaler"`` (their ``state_dict()``;
``scaler`` is ``None`` without mixed precision), ``"rng"`` (torch, numpy and Python generator
states as tensors and plain containers), ``"config"`` (the training config as plain data) and
``"metrics"`` (the last iteration's losses). The node and the exporter ignore them, except that
the scalar ones are :attr:`LoadedCheckpoint.training_info`, which an export records as provenance.

Why here, in the runtime package: the exporter and the node's PyTorch backend must rebuild
exactly the trained network from the file alone, and the node must not import ``training``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_output
from ..hierarchy import Hierarchy, HierarchyError
from ..model import BACKBONES, DECODERS, HierarchicalSegNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEYS",
    "TRAINING_KEYS",
    "CheckpointFormatError",
    "LoadedCheckpoint",
    "ModelConfig",
    "checkpoint_dict",
    "describe_hierarchy_difference",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_KEYS = ("model", "hierarchy", "model_config")
CHECKPOINT_FORMAT = 1  # version of the training-state layout below (the three contract keys never change)
TRAINING_KEYS = ("iteration", "world_size", "optimizer", "scheduler", "scaler", "rng", "config", "metrics")
_OPTIONAL_MODEL_KEYS = {"decoder": "none"}  # model_config keys added later -> the value their absence means


class CheckpointFormatError(ValueError):
    """A checkpoint does not follow the format; the message starts with the file's path."""


@dataclass(frozen=True)
class ModelConfig:
    """Network configuration besides the hierarchy (the ``model_config`` entry)."""

    backbone: str = "mobilenet_v2"
    output_stride: int = 16
    shared_channels: int = 256
    adaptation_depth: int = 1
    adaptation_dilation: int = 1
    decoder: str = "none"  # "none" or "deconv_skip" (logits at half the output stride, hiseg_ros.model.decoder)

    def to_dict(self) -> dict[str, Any]:
        """The ``model_config`` entry: these fields only, also for a subclass that adds training
        options; an optional key at the value its absence means is left out (see the module doc)."""
        return {k: v for k, v in self.network_fields().items() if _OPTIONAL_MODEL_KEYS.get(k, object()) != v}

    def network_fields(self) -> dict[str, Any]:
        """Every network field, optional ones included (to compare two configs)."""
        return {f.name: getattr(self, f.name) for f in fields(ModelConfig)}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> ModelConfig:
        if not isinstance(data, Mapping):
            raise CheckpointFormatError(f"{source}: model_config: expected a dict, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n not in _OPTIONAL_MODEL_KEYS]
        unknown = sorted(str(k) for k in data if k not in names)
        if missing or unknown:
            parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
            raise CheckpointFormatError(f"{source}: model_config: {'; '.join(parts)} (expected keys {names})")
        if data["backbone"] not in BACKBONES:
            raise CheckpointFormatError(
                f"{source}: model_config.backbone: {data['backbone']!r} is not one of {list(BACKBONES)}"
            )
        data = {**_OPTIONAL_MODEL_KEYS, **data}
        if data["decoder"] not in DECODERS:
            raise CheckpointFormatError(
                f"{source}: model_config.decoder: {data['decoder']!r} is not one of {list(DECODERS)}"
            )
        for name in names:
            if name in ("backbone", "decoder"):  # the strings, checked above
                continue
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
            decoder=self.decoder,
        )


@dataclass
class LoadedCheckpoint:
    """A checkpoint turned back into its network (eval mode) and hierarchy."""

    path: Path
    net: HierarchicalSegNet
    hierarchy: Hierarchy
    config: ModelConfig
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)  # every key besides the three contract keys

    @property
    def training_info(self) -> dict[str, Any]:
        """The scalar training entries (format, iteration, world size): provenance of an export."""
        return {k: v for k, v in self.training.items() if isinstance(v, int | float | str | bool)}


# --------------------------------------------------------------------------- writing
def checkpoint_dict(
    net: HierarchicalSegNet,
    hierarchy: Hierarchy,
    config: ModelConfig,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file's content: the three contract keys for ``net``, plus ``format`` and the training
    state when ``training`` (keys of :data:`TRAINING_KEYS`) is given.

    The training state is checked here, at the one place that writes it, to hold only what
    ``weights_only=True`` reads back; anything else would make ``--resume`` fail much later.
    """
    content: dict[str, Any] = {
        "model": net.state_dict(),
        "hierarchy": hierarchy.to_json(),
        "model_config": config.to_dict(),
    }
    if training is None:
        return content
    unknown = sorted(set(training) - set(TRAINING_KEYS))
    if unknown:
        raise ValueError(f"checkpoint training state: unknown key(s) {unknown} (expected {list(TRAINING_KEYS)})")
    for key, value in training.items():
        _check_plain(value, key)
    return {"format": CHECKPOINT_FORMAT, **content, **training}


def save_checkpoint(
    path: str | Path,
    net: HierarchicalSegNet,
    hierarchy: Hierarchy,
    config: ModelConfig,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`checkpoint_dict` atomically (fsync'ed temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    content = checkpoint_dict(net, hierarchy, config, training)
    with atomic_output(path) as tmp:
        torch.save(content, tmp)
    return path


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, torch.Tensor) or type(value) in (str, int, float, bool):
        return  # exact types: a numpy float64 is a float, but weights_only cannot read it back
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint training state {where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint training state {where}: a {type(value).__name__} cannot be read back with weights_only=True "
        "(store tensors, numbers, strings and lists / dicts of them)"
    )


# --------------------------------------------------------------------------- reading
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


def load_checkpoint(
    path: str | Path,
    expected_hierarchy: Hierarchy | None = None,
    expected_config: ModelConfig | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint of the format above and rebuild its network (eval mode).

    ``expected_hierarchy`` / ``expected_config``: refuse a checkpoint trained for any other
    hierarchy / network. Every problem is a :class:`CheckpointFormatError` naming the file.
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
    if expected_config is not None and config.network_fields() != expected_config.network_fields():
        expected = expected_config.network_fields()
        diff = ", ".join(
            f"{k}: checkpoint {v!r} vs {expected[k]!r}" for k, v in config.network_fields().items() if v != expected[k]
        )
        raise CheckpointFormatError(f"{path}: checkpoint's model_config does not match the expected network ({diff})")
    net = _rebuild(path, obj["model"], config, hierarchy)
    training = {str(k): v for k, v in obj.items() if k not in CHECKPOINT_KEYS}
    return LoadedCheckpoint(path, net.eval(), hierarchy, config, hashlib.sha256(raw).hexdigest(), training)


def _rebuild(path: Path, state: Any, config: ModelConfig, hierarchy: Hierarchy) -> HierarchicalSegNet:
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
    return net


def _numpy_globals() -> list[Any]:
    """numpy arrays, scalars and dtypes, allowed in the ``weights_only`` unpickler: checkpoints
    written before the training loop stored its numpy RNG state as a tensor hold numpy arrays
    (and may hold numpy scalars in their metrics). They are rebuilt from bytes, no code runs, so
    such a file still cannot execute anything when loaded."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtypes = {type(np.dtype(code)) for code in np.typecodes["All"]}
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *sorted(dtypes, key=str)]


def _few(keys: list[str], limit: int = 6) -> str:
    return str(keys[:limit])[:-1] + (f", ... {len(keys)} in total]" if len(keys) > limit else "]")
