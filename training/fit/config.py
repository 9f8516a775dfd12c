"""Training configuration: one YAML file (optionally a variant of another), parsed into frozen dataclasses.

Every problem is a :class:`~training.config_schema.ConfigError` whose message starts with the file
and the offending key (``default.yaml: loss.weights.traffic_sgn: ...``), raised before any training
starts: unknown or misspelt keys, wrong types, unknown datasets, classes or classifiers, datasets
whose labels do not fit the hierarchy (see :func:`check_datasets`, which also opens the readers).

Each section is one dataclass, next to the code that uses it: ``augment`` is
:class:`training.data.augment.AugmentConfig`, ``pseudo_labels`` is
:class:`training.labels.targets.PseudoLabelConfig` (its ``precomputed`` entries and their folder
check: :mod:`training.labels.pseudo_labels.precomputed`), ``model`` is the runtime network config
plus two training-only fields (:class:`TrainingModelConfig`). A section's value checks live in its
dataclass, or for the sections defined here in :func:`validate_config`, with the cross-references.

``base: PATH`` (relative to the file) makes it a variant: sections merge key by key over the base's
(a chain of bases is fine), a key's value (number, list, table such as ``loss.weights``) replaces
the base's whole; an error in an inherited key names the file that wrote it. Relative paths
(``hierarchy``, ``data_root``, dataset ``root``, ``model.pretrained``, ``checkpoint.init``,
``pseudo_labels.precomputed.*.dir``) resolve against the directory of the file that wrote them;
``run.out_dir`` against the working directory.

Why not pydantic: it is not a dependency (one more pinned package in every venv) and would not be
less code. It would replace the generic typed parsing of :mod:`training.config_schema` (under 100
lines), not the cross-references (hierarchy, datasets, files), and its messages (``Input should be
a valid integer``, tuple locations, lax ``"1"`` -> 1 unless strict) would need a translation layer
to keep ``FILE: KEY: expected an integer, got 2.5``; the sections owned by :mod:`training.data` and
:mod:`training.labels` would have to become pydantic models there too.

Schema (defaults in the dataclasses)::

    base: default.yaml                     # optional: this file is a variant of that one
    hierarchy: ../hierarchies/iv2018.yaml
    data_root: ../../data/synthetic        # optional base of the dataset roots
    datasets:                              # fixed per-batch composition, per process
      - {name: cityscapes, root: cityscapes, per_batch: 1, options: {split: train},
         crops: {tiles: [R, C], box_crop: {share, size_px, jitter}, rare_class: {share, classes}}}
    model: {backbone, output_stride, shared_channels, adaptation_depth, adaptation_dilation,
            decoder: none | deconv_skip, pretrained: default | null | PATH, sync_batchnorm}
    augment: {crop: [H, W], scale: [lo, hi], base_height, flip, brightness, contrast}
    pseudo_labels: {box_mode: multihot | fill, min_mass, supervise_root, box_core: 0..1,
                    tag_classifiers: all | untaught | [classifier, ...],
                    precomputed: {DATASET: {dir: DIR, output: hard | soft}}}
    loss: {weights: {classifier: weight},  # unspecified: root 1.0, others 0.1
           trunk_weights: {classifier: weight},  # what reaches the shared trunk (training.fit.trunk_gradient)
           class_weights: {classifier: {class: weight}}}  # per-class pixel weights (training.fit.loss)
    optimizer: {lr, momentum, nesterov, weight_decay, sub_weight_decay, kind: sgd | adamw,
                head_lr: {classifier: multiplier}, clip_grad_norm: null | max norm}
    schedule: {iterations, poly_power, warmup_iterations}
    run: {seed, out_dir, amp, num_workers, log_every, device}
    checkpoint: {every, keep, init}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiseg_ros.engines.checkpoint import ModelConfig
from hiseg_ros.hierarchy import Hierarchy, HierarchyError, load_hierarchy
from hiseg_ros.model import BACKBONES, DECODERS
from training.config_schema import (
    ConfigError,
    ConfigSource,
    convert,
    field_names,
    load_with_bases,
    parse_dataclass,
    reject_unknown_keys,
)
from training.data.augment import AugmentConfig
from training.data.crops import CropConfig, check_crops, parse_crops
from training.data.readers import READERS
from training.labels.pseudo_labels.precomputed import (
    PrecomputedSource,
    check_precomputed,
    label_generators,
    parse_precomputed,
)
from training.labels.targets import PseudoLabelConfig, tag_classifier_set

__all__ = ["ConfigError", "TrainConfig", "check_datasets", "load_config", "open_datasets", "parse_config"]

MERGE_DEPTH = 2  # ``base:`` merges the top level and each section key by key; deeper values replace whole
OPTIMIZERS = ("sgd", "adamw")  # optimizer.kind (training.fit.optim)
PRECOMPUTED = "pseudo_labels.precomputed"  # YAML key of TrainConfig.precomputed_labels


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str
    per_batch: int = 1
    options: dict = field(default_factory=dict)  # keyword arguments of the reader (split, version, ...)
    crops: CropConfig = field(default_factory=CropConfig)  # where crops are cut (training.data.crops)


@dataclass(frozen=True)
class TrainingModelConfig(ModelConfig):
    """The ``model`` section: the network (the runtime :class:`~hiseg_ros.engines.checkpoint.ModelConfig`,
    what a checkpoint's ``model_config`` records) plus how training initialises it.

    A subclass, not a copy: the network fields are declared once, in the runtime, which cannot hold
    these two (its checkpoint format rejects unknown keys, and the runtime never knows training);
    ``to_dict()`` is still the checkpoint's ``model_config`` (the network fields only).
    """

    pretrained: str | None = "default"  # "default" (offline ImageNet weights), null (random) or a path
    sync_batchnorm: bool = False


@dataclass(frozen=True)
class LossConfig:
    weights: dict = field(default_factory=dict)  # classifier name -> weight (its head's loss)
    # classifier name -> the weight of its loss as the shared trunk sees it; unspecified: root its
    # weight, sub-classifiers min(weight, 0.1) (training.fit.trunk_gradient)
    trunk_weights: dict = field(default_factory=dict)
    # classifier name -> {class name: weight of its pixels}; unlisted classes 1 (training.fit.loss)
    class_weights: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4  # backbone, shared reduction and root classifier
    sub_weight_decay: float = 1.7e-4  # every sub-classifier head (IV 2018)
    head_lr: dict = field(default_factory=dict)  # classifier name -> learning-rate multiplier of its head (1)
    clip_grad_norm: float | None = None  # clip the global gradient norm to this (null: no clipping)
    kind: str = "sgd"  # "sgd" (the IV 2018 recipe) or "adamw" (Adam's step sizes: training.fit.optim)


@dataclass(frozen=True)
class ScheduleConfig:
    iterations: int = 1000
    poly_power: float = 0.9
    warmup_iterations: int = 0


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    out_dir: str = "runs/default"
    amp: bool = True  # mixed precision; only ever used on CUDA
    num_workers: int = 2  # data loading processes per training process (0: in-process)
    log_every: int = 1  # CSV rows every N iterations
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 100
    keep: int = 3
    init: str | None = None  # model weights to start from (same hierarchy and model config)


@dataclass(frozen=True)
class TrainConfig:
    hierarchy: str
    datasets: tuple[DatasetConfig, ...]
    data_root: str | None = None
    model: TrainingModelConfig = field(default_factory=TrainingModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    precomputed_labels: dict[str, PrecomputedSource] = field(default_factory=dict)  # YAML: pseudo_labels.precomputed
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    source: str = "<config>"  # the file it came from (not a YAML key)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)  # key -> file (base:)

    @property
    def where(self) -> ConfigSource:
        """Names the file and key in errors (the base file for an inherited key)."""
        return ConfigSource(self.source, self.origins)

    def pseudo_label_generators(self, hierarchy: Hierarchy) -> dict[str, Any]:
        """``TargetBuilder`` generators: precomputed pseudo labels per dataset (empty: uniform tiling)."""
        return label_generators(self.precomputed_labels, hierarchy)

    def dataset_root(self, ds: DatasetConfig) -> Path:
        root = Path(ds.root)
        if not root.is_absolute() and self.data_root is not None:
            root = Path(self.data_root) / root
        return root

    def to_dict(self) -> dict[str, Any]:
        """The effective config in the YAML's layout (written next to a run and into its checkpoints)."""
        out = dataclasses.asdict(self)
        for key in ("source", "origins"):
            out.pop(key)
        out["pseudo_labels"]["precomputed"] = out.pop("precomputed_labels")
        out["datasets"] = [{**dataclasses.asdict(d), "crops": d.crops.to_dict()} for d in self.datasets]
        for key in ("crop", "scale"):
            out["augment"][key] = list(out["augment"][key])
        return out

    def with_overrides(self, **sections: Mapping[str, Any]) -> TrainConfig:
        """A copy with some fields of some sections replaced (CLI ``--out``, ``--iterations``)."""
        changes = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type] = {
    "model": TrainingModelConfig,
    "augment": AugmentConfig,
    "pseudo_labels": PseudoLabelConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "run": RunConfig,
    "checkpoint": CheckpointConfig,
}


# --------------------------------------------------------------------------- loading
def load_config(path: str | Path, check_data: bool = True) -> tuple[TrainConfig, Hierarchy]:
    """Parse and validate ``path`` (merged over its ``base:`` chain); returns the config (paths
    resolved) and its hierarchy.

    ``check_data`` also opens every dataset reader (indexes the files) and checks that the
    dataset's labels fit the hierarchy (:func:`check_datasets`).
    """
    raw, source = load_with_bases(path, MERGE_DEPTH)
    config = parse_config(raw, source=source.path, base_dir=Path(path).parent, origins=source.origins)
    hierarchy = validate_config(config)
    if check_data:
        check_datasets(config, hierarchy)
    return config, hierarchy


def parse_config(
    raw: Any, source: str = "<config>", base_dir: Path | None = None, origins: Mapping[str, str] | None = None
) -> TrainConfig:
    """Types and keys only (no file access); relative paths resolved against the directory of the
    file that wrote them (``origins``: key -> file, from a ``base:`` merge), else ``base_dir``."""
    where = ConfigSource(source, dict(origins or {}))
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    reject_unknown_keys("", raw, sorted({"hierarchy", "datasets", "data_root", *_SECTIONS}), where)
    if "hierarchy" not in raw:
        raise where.error("hierarchy", "missing required key (path of the hierarchy YAML)")
    hierarchy = convert(str, raw["hierarchy"], "hierarchy", where)
    data_root = raw.get("data_root")
    if data_root is not None:
        data_root = convert(str, data_root, "data_root", where)
    raw_datasets = raw.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets:
        raise where.error("datasets", "expected a non-empty list of {name, root, per_batch}")
    datasets = tuple(_parse_dataset(d, f"datasets[{i}]", where) for i, d in enumerate(raw_datasets))
    raw_sections = {name: raw.get(name) for name in _SECTIONS}
    precomputed: dict[str, PrecomputedSource] = {}
    pl = raw_sections["pseudo_labels"]
    if isinstance(pl, dict):  # its ``precomputed`` entries: parsed by the pseudo-label code
        reject_unknown_keys("pseudo_labels", pl, [*field_names(PseudoLabelConfig), "precomputed"], where)
        raw_sections["pseudo_labels"] = {k: v for k, v in pl.items() if k != "precomputed"}
        precomputed = parse_precomputed(pl.get("precomputed"), PRECOMPUTED, where)
    sections = {name: parse_dataclass(_SECTIONS[name], value, name, where) for name, value in raw_sections.items()}

    def resolve(p: str | None, key: str) -> str | None:
        if p is None or Path(p).is_absolute():
            return p
        file = where.file_of(key)
        directory = base_dir if file == source else Path(file).parent
        return p if directory is None else str((directory / p).resolve())

    hierarchy = resolve(hierarchy, "hierarchy")
    data_root = resolve(data_root, "data_root")
    if data_root is None:
        datasets = tuple(dataclasses.replace(d, root=resolve(d.root, "datasets")) for d in datasets)
    model = sections["model"]
    if model.pretrained not in (None, "default"):
        sections["model"] = dataclasses.replace(model, pretrained=resolve(model.pretrained, "model.pretrained"))
    ckpt = sections["checkpoint"]
    if ckpt.init is not None:
        sections["checkpoint"] = dataclasses.replace(ckpt, init=resolve(ckpt.init, "checkpoint.init"))
    precomputed = {
        name: dataclasses.replace(entry, dir=resolve(entry.dir, f"{PRECOMPUTED}.{name}"))
        for name, entry in precomputed.items()
    }
    return TrainConfig(
        hierarchy=hierarchy,
        datasets=datasets,
        data_root=data_root,
        precomputed_labels=precomputed,
        source=source,
        origins=where.origins,
        **sections,
    )


def _parse_dataset(raw: Any, key: str, where: ConfigSource) -> DatasetConfig:
    """One ``datasets`` entry; its ``crops`` mapping is parsed by :func:`training.data.crops.parse_crops`."""
    crops = CropConfig()
    if isinstance(raw, dict) and "crops" in raw:
        crops = parse_crops(raw["crops"], f"{key}.crops", where)
        raw = {k: v for k, v in raw.items() if k != "crops"}
    entry = parse_dataclass(DatasetConfig, raw, key, where, required={"name": "", "root": ""})
    return dataclasses.replace(entry, crops=crops)


def validate_config(config: TrainConfig) -> Hierarchy:
    """Values and cross-references (hierarchy, datasets, classifiers); returns the loaded hierarchy."""
    fail = config.where.error

    try:
        hierarchy = load_hierarchy(config.hierarchy)
    except (HierarchyError, OSError) as exc:
        raise fail("hierarchy", f"cannot load {config.hierarchy}: {exc}") from exc

    seen: dict[str, int] = {}
    for i, ds in enumerate(config.datasets):
        key = f"datasets[{i}]"
        if ds.name not in READERS:
            raise fail(f"{key}.name", f"unknown dataset {ds.name!r} (readers: {', '.join(READERS)})")
        if ds.name not in hierarchy.datasets:
            raise fail(
                f"{key}.name",
                f"dataset {ds.name!r} has no label mapping in hierarchy {hierarchy.name!r} "
                f"(it maps {', '.join(sorted(hierarchy.datasets)) or 'no datasets'})",
            )
        if ds.name in seen:
            raise fail(f"{key}.name", f"dataset {ds.name!r} listed twice (also datasets[{seen[ds.name]}])")
        seen[ds.name] = i
        if ds.per_batch < 0:
            raise fail(f"{key}.per_batch", f"expected >= 0, got {ds.per_batch}")
        supervision = hierarchy.dataset(ds.name).supervision
        check_crops(ds.crops, f"{key}.crops", config.where, supervision, ds.name, hierarchy, config.augment.crop)
    if sum(d.per_batch for d in config.datasets) <= 0:
        raise fail("datasets", "a batch needs at least one sample (all per_batch are 0)")

    m = config.model
    if m.backbone not in BACKBONES:
        raise fail("model.backbone", f"unknown backbone {m.backbone!r} (expected one of {', '.join(BACKBONES)})")
    if m.output_stride not in (8, 16, 32):
        raise fail("model.output_stride", f"expected 8, 16 or 32, got {m.output_stride}")
    if m.decoder not in DECODERS:
        raise fail("model.decoder", f"unknown decoder {m.decoder!r} (expected one of {', '.join(DECODERS)})")
    for key in ("shared_channels", "adaptation_depth", "adaptation_dilation"):
        if getattr(m, key) < (0 if key == "adaptation_depth" else 1):
            raise fail(f"model.{key}", f"out of range: {getattr(m, key)}")
    if m.pretrained not in (None, "default") and not Path(m.pretrained).is_file():
        raise fail("model.pretrained", f"no such file {m.pretrained}")

    check_precomputed(
        config.precomputed_labels, [d.name for d in config.datasets], hierarchy, PRECOMPUTED, config.where
    )

    _check_classifier_table(config, hierarchy, "loss.weights", config.loss.weights, positive=False)
    _check_classifier_table(config, hierarchy, "loss.trunk_weights", config.loss.trunk_weights, positive=False)
    _check_classifier_table(config, hierarchy, "optimizer.head_lr", config.optimizer.head_lr, positive=True)
    _check_class_weights(config, hierarchy)
    try:
        tag_classifier_set(hierarchy, config.pseudo_labels.tag_classifiers)
    except ValueError as exc:
        raise fail("pseudo_labels.tag_classifiers", str(exc)) from None

    o = config.optimizer
    if o.kind not in OPTIMIZERS:
        raise fail("optimizer.kind", f"expected one of {', '.join(OPTIMIZERS)}, got {o.kind!r}")
    if o.kind == "adamw" and not o.momentum < 1:
        raise fail("optimizer.momentum", f"adamw: Adam's beta1, expected < 1, got {o.momentum}")
    if o.lr <= 0:
        raise fail("optimizer.lr", f"expected > 0, got {o.lr}")
    if o.clip_grad_norm is not None and not o.clip_grad_norm > 0:
        raise fail("optimizer.clip_grad_norm", f"expected a norm > 0 or null, got {o.clip_grad_norm}")
    for key in ("momentum", "weight_decay", "sub_weight_decay"):
        if getattr(o, key) < 0:
            raise fail(f"optimizer.{key}", f"expected >= 0, got {getattr(o, key)}")
    s = config.schedule
    if s.iterations <= 0:
        raise fail("schedule.iterations", f"expected > 0, got {s.iterations}")
    if s.poly_power < 0:
        raise fail("schedule.poly_power", f"expected >= 0, got {s.poly_power}")
    if not 0 <= s.warmup_iterations < s.iterations:
        raise fail("schedule.warmup_iterations", f"expected 0 <= warmup < iterations, got {s.warmup_iterations}")
    r = config.run
    if r.num_workers < 0 or r.log_every <= 0:
        raise fail("run", "num_workers must be >= 0 and log_every > 0")
    if r.device not in ("auto", "cpu", "cuda"):
        raise fail("run.device", f"expected auto, cpu or cuda, got {r.device!r}")
    c = config.checkpoint
    if c.every <= 0:
        raise fail("checkpoint.every", f"expected > 0, got {c.every}")
    if c.keep < 1:
        raise fail("checkpoint.keep", f"expected >= 1, got {c.keep}")
    if c.init is not None and not Path(c.init).is_file():
        raise fail("checkpoint.init", f"no such file {c.init}")
    return hierarchy


def _check_classifier_table(
    config: TrainConfig, hierarchy: Hierarchy, key: str, table: Mapping[str, Any], positive: bool
) -> None:
    """A ``{classifier: number}`` table (loss weights, trunk weights, head learning rates): every key
    a classifier of the hierarchy, every value a number >= 0 (``positive``: > 0)."""
    classifiers = set(hierarchy.classifier_names)
    class_names = {c.name for c in hierarchy.classes}
    for name, value in table.items():
        where = f"{key}.{name}"
        if name not in classifiers:
            if name in class_names:
                raise config.where.error(
                    where, f"class {name!r} of hierarchy {hierarchy.name!r} owns no classifier (it is a leaf)"
                )
            raise config.where.error(
                where,
                f"unknown classifier {name!r} in hierarchy {hierarchy.name!r} "
                f"(classifiers: {', '.join(hierarchy.classifier_names)})",
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
            raise config.where.error(where, f"expected a number {'> 0' if positive else '>= 0'}, got {value!r}")


def _check_class_weights(config: TrainConfig, hierarchy: Hierarchy) -> None:
    """``loss.class_weights``: a classifier table whose values are ``{class of that classifier: weight > 0}``."""
    table = config.loss.class_weights
    for name, weights in table.items():
        _check_classifier_table(config, hierarchy, "loss.class_weights", {name: 1.0}, positive=True)
        where = f"loss.class_weights.{name}"
        if not isinstance(weights, Mapping):
            raise config.where.error(where, f"expected a mapping class name -> weight, got {weights!r}")
        classes = list(next(c for c in hierarchy.classifiers if c.name == name).classes)
        for cls, value in weights.items():
            if cls not in classes:
                raise config.where.error(
                    f"{where}.{cls}", f"not a class of classifier {name!r} (its classes: {', '.join(classes)})"
                )
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise config.where.error(f"{where}.{cls}", f"expected a number > 0, got {value!r}")


def open_datasets(config: TrainConfig) -> list:
    """Construct the readers (indexes the files); a format problem names the config key and the file."""
    from training.data.readers import load_dataset

    readers = []
    for i, ds in enumerate(config.datasets):
        root = config.dataset_root(ds)
        try:
            readers.append(load_dataset(ds.name, root, **ds.options))
        except TypeError as exc:
            raise config.where.error(f"datasets[{i}].options", str(exc)) from exc
        except (ValueError, OSError) as exc:
            file = config.where.file_of("datasets")
            raise ConfigError(f"{file}: datasets[{i}] ({ds.name} at {root}): {exc}") from exc
    return readers


def check_datasets(config: TrainConfig, hierarchy: Hierarchy, readers: list | None = None) -> list:
    """Open the readers and check every native label they can produce is mapped by the hierarchy."""
    readers = open_datasets(config) if readers is None else readers
    for i, (ds, reader) in enumerate(zip(config.datasets, readers, strict=True)):
        mapping = hierarchy.dataset(ds.name)
        if mapping.supervision == "tags":
            native = set(reader.class_names)
        else:
            native = set(getattr(reader, "native_ids", range(len(reader.class_names))))
        unmapped = sorted(
            native - set(mapping.ids), key=lambda u: (isinstance(u, str), u if isinstance(u, str) else int(u))
        )
        if unmapped:
            shown = ", ".join(repr(u) for u in unmapped[:20])
            raise config.where.error(
                f"datasets[{i}]",
                f"labels of dataset {ds.name!r} do not fit hierarchy {hierarchy.name!r}: native "
                f"{'tags' if mapping.supervision == 'tags' else 'ids'} {shown} are not mapped "
                f"({len(unmapped)} in all)",
            )
    return readers
