"""Training configuration: one YAML file, parsed into frozen dataclasses and validated on load.

Every problem is a :class:`ConfigError` whose message starts with the file and the offending key
(``default.yaml: loss.weights.traffic_sgn: ...``), raised before any training starts: unknown or
misspelt keys, wrong types, unknown datasets, classes or classifiers, datasets whose labels do not
fit the hierarchy (see :func:`check_datasets`, which also opens the dataset readers).

Relative paths (``hierarchy``, ``data_root``, dataset ``root``, ``checkpoint.init``,
``pseudo_labels.precomputed.*.dir``) are resolved against the directory of the config file;
``run.out_dir`` against the working directory.

``pseudo_labels.precomputed`` replaces the IV 2019 uniform tiling of an image-level-tag dataset by
the pseudo labels that ``python -m training.labels.pseudo_labels generate --hierarchy H --out DIR`` wrote
(read by :class:`training.labels.pseudo_labels.generator.PrecomputedLabels`; ``output`` must be the
generator's ``--output``, default ``hard``). The folder must hold the generator's settings file,
made for this dataset and this hierarchy; every sampled image needs its label file (a missing one
stops training with an error naming the file: run the generator on exactly the images trained on).

Schema (defaults in the dataclasses below)::

    hierarchy: ../hierarchies/iv2018.yaml
    data_root: ../../data/synthetic        # optional base of the dataset roots
    datasets:                              # fixed per-batch composition, per process
      - {name: cityscapes, root: cityscapes, per_batch: 1, options: {split: train}}
    model: {backbone, output_stride, shared_channels, adaptation_depth, adaptation_dilation,
            pretrained: default | null | PATH, sync_batchnorm}
    augment: {crop: [H, W], scale: [lo, hi], base_height, flip, brightness, contrast}
    pseudo_labels: {box_mode: multihot | fill, min_mass, supervise_root,
                    precomputed: {DATASET: {dir: DIR, output: hard | soft}}}
    loss: {weights: {classifier: weight}}  # unspecified: root 1.0, others 0.1
    optimizer: {lr, momentum, nesterov, weight_decay, sub_weight_decay}
    schedule: {iterations, poly_power, warmup_iterations}
    run: {seed, out_dir, amp, num_workers, log_every, device}
    checkpoint: {every, keep, init}
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hiseg_ros.engines.checkpoint import ModelConfig as NetworkConfig
from hiseg_ros.hierarchy import Hierarchy, HierarchyError, load_hierarchy
from hiseg_ros.model import BACKBONES
from training.data.augment import AugmentConfig
from training.data.readers import READERS
from training.labels.targets import BOX_MODES, PseudoLabelConfig


class ConfigError(ValueError):
    """An invalid training config; the message names the file and the key."""


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str
    per_batch: int = 1
    options: dict = field(default_factory=dict)  # keyword arguments of the reader (split, version, ...)


@dataclass(frozen=True)
class ModelConfig(NetworkConfig):
    """The network (what a checkpoint's ``model_config`` records) plus how training initialises it."""

    pretrained: str | None = "default"  # "default" (offline ImageNet weights), null (random) or a path
    sync_batchnorm: bool = False

    def checkpoint_config(self) -> dict[str, Any]:
        """The ``model_config`` of a checkpoint: what rebuilds the network (with the hierarchy)."""
        return NetworkConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(NetworkConfig)}).to_dict()


@dataclass(frozen=True)
class AugmentSection:
    crop: tuple[int, int] = (256, 512)
    scale: tuple[float, float] = (0.5, 1.5)
    base_height: int | None = None
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2


PRECOMPUTED_OUTPUTS = ("hard", "soft")


@dataclass(frozen=True)
class PseudoLabelSection:
    box_mode: str = "multihot"
    min_mass: float = 0.01
    supervise_root: bool = False  # flat baselines: let boxes / tags train the (only) root classifier
    # dataset name -> {"dir": label folder (resolved), "output": "hard" | "soft"}; see the module docstring
    precomputed: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LossConfig:
    weights: dict = field(default_factory=dict)  # classifier name -> weight


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4  # backbone, shared reduction and root classifier
    sub_weight_decay: float = 1.7e-4  # every sub-classifier head (IV 2018)


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
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    pseudo_labels: PseudoLabelSection = field(default_factory=PseudoLabelSection)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    source: str = "<config>"  # the file it came from (not a YAML key)

    # -------------------------------------------------------------- derived objects
    def augment_config(self) -> AugmentConfig:
        a = self.augment
        return AugmentConfig(tuple(a.crop), tuple(a.scale), a.base_height, a.flip, a.brightness, a.contrast)

    def pseudo_label_config(self) -> PseudoLabelConfig:
        return PseudoLabelConfig(  # type: ignore[arg-type]
            self.pseudo_labels.box_mode, self.pseudo_labels.min_mass, self.pseudo_labels.supervise_root
        )

    def pseudo_label_generators(self, hierarchy: Hierarchy) -> dict[str, Any]:
        """``TargetBuilder`` generators: precomputed pseudo labels per dataset (empty: uniform tiling)."""
        from training.labels.pseudo_labels.generator import PrecomputedLabels

        return {
            name: PrecomputedLabels(hierarchy, Path(entry["dir"]), entry["output"])
            for name, entry in self.pseudo_labels.precomputed.items()
        }

    def dataset_root(self, ds: DatasetConfig) -> Path:
        root = Path(ds.root)
        if not root.is_absolute() and self.data_root is not None:
            root = Path(self.data_root) / root
        return root

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        out["datasets"] = [dataclasses.asdict(d) for d in self.datasets]
        for key in ("crop", "scale"):
            out["augment"][key] = list(out["augment"][key])
        return out

    def with_overrides(self, **sections: Mapping[str, Any]) -> TrainConfig:
        """A copy with some fields of some sections replaced (CLI ``--out``, ``--iterations``)."""
        changes = {name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()}
        return dataclasses.replace(self, **changes)


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "augment": AugmentSection,
    "pseudo_labels": PseudoLabelSection,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "run": RunConfig,
    "checkpoint": CheckpointConfig,
}


# --------------------------------------------------------------------------- generic typed parsing
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} {_type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any, err) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, err)
            except ConfigError:
                continue
        raise err(f"expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_convert(a, v, err) for a, v in zip(args, value, strict=True))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict and isinstance(value, dict):
        return dict(value)
    raise err(f"expected {_type_name(tp)}, got {value!r}")


def _reject_unknown(raw: Mapping, allowed: Sequence[str], prefix: str, source: str) -> None:
    """ConfigError at the first key of ``raw`` not in ``allowed`` (``prefix`` = dotted parent key or '')."""
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ConfigError(f"{source}: {prefix}{unknown[0]}: unknown key (expected one of {', '.join(allowed)})")


def _parse_section(cls: type, raw: Any, where: str, source: str, required: tuple[str, ...] = ()) -> Any:
    def error_at(key: str):
        return lambda message: ConfigError(f"{source}: {key}: {message}")

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    _reject_unknown(raw, names, f"{where}.", source)
    for key in required:
        if key not in raw:
            raise ConfigError(f"{source}: {where}.{key}: missing required key")
    values = {k: _convert(hints[k], v, error_at(f"{where}.{k}")) for k, v in raw.items()}
    return cls(**values)


# --------------------------------------------------------------------------- loading
def load_config(path: str | Path, check_data: bool = True) -> tuple[TrainConfig, Hierarchy]:
    """Parse and validate ``path``; returns the config (paths resolved) and its hierarchy.

    ``check_data`` also opens every dataset reader (indexes the files) and checks that the
    dataset's labels fit the hierarchy (:func:`check_datasets`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    config = parse_config(raw, source=str(path), base_dir=path.parent)
    hierarchy = validate_config(config)
    if check_data:
        check_datasets(config, hierarchy)
    return config, hierarchy


def parse_config(raw: Any, source: str = "<config>", base_dir: Path | None = None) -> TrainConfig:
    """Types and keys only (no file access); relative paths resolved against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    _reject_unknown(raw, sorted({"hierarchy", "datasets", "data_root", *_SECTIONS}), "", source)
    if "hierarchy" not in raw:
        raise ConfigError(f"{source}: hierarchy: missing required key (path of the hierarchy YAML)")
    hierarchy = _convert(str, raw["hierarchy"], lambda m: ConfigError(f"{source}: hierarchy: {m}"))
    data_root = raw.get("data_root")
    if data_root is not None:
        data_root = _convert(str, data_root, lambda m: ConfigError(f"{source}: data_root: {m}"))
    raw_datasets = raw.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets:
        raise ConfigError(f"{source}: datasets: expected a non-empty list of {{name, root, per_batch}}")
    datasets = tuple(
        _parse_section(DatasetConfig, d, f"datasets[{i}]", source, required=("name", "root"))
        for i, d in enumerate(raw_datasets)
    )
    sections = {name: _parse_section(cls, raw.get(name), name, source) for name, cls in _SECTIONS.items()}

    def resolve(p: str | None) -> str | None:
        if p is None or base_dir is None or Path(p).is_absolute():
            return p
        return str((base_dir / p).resolve())

    hierarchy = resolve(hierarchy)
    data_root = resolve(data_root)
    if data_root is None:
        datasets = tuple(dataclasses.replace(d, root=resolve(d.root)) for d in datasets)
    model = sections["model"]
    if model.pretrained not in (None, "default"):
        sections["model"] = dataclasses.replace(model, pretrained=resolve(model.pretrained))
    ckpt = sections["checkpoint"]
    if ckpt.init is not None:
        sections["checkpoint"] = dataclasses.replace(ckpt, init=resolve(ckpt.init))
    pl = sections["pseudo_labels"]
    if pl.precomputed:
        precomputed = _parse_precomputed(pl.precomputed, source)
        precomputed = {name: dict(entry, dir=resolve(entry["dir"])) for name, entry in precomputed.items()}
        sections["pseudo_labels"] = dataclasses.replace(pl, precomputed=precomputed)
    return TrainConfig(hierarchy=hierarchy, datasets=datasets, data_root=data_root, source=source, **sections)


def _parse_precomputed(raw: dict, source: str) -> dict[str, dict[str, str]]:
    """``pseudo_labels.precomputed`` entries: ``{dir: str, output: hard | soft}`` (types and keys only)."""
    out = {}
    for name, entry in raw.items():
        key = f"pseudo_labels.precomputed.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping {{dir: DIR, output: hard | soft}}, got {entry!r}")
        _reject_unknown(entry, ("dir", "output"), f"{key}.", source)
        if "dir" not in entry:
            raise ConfigError(f"{source}: {key}.dir: missing required key (folder written by the generator)")
        folder = _convert(str, entry["dir"], lambda m, k=key: ConfigError(f"{source}: {k}.dir: {m}"))
        output = entry.get("output", "hard")
        if output not in PRECOMPUTED_OUTPUTS:
            raise ConfigError(f"{source}: {key}.output: expected one of {list(PRECOMPUTED_OUTPUTS)}, got {output!r}")
        out[str(name)] = {"dir": folder, "output": output}
    return out


def _check_precomputed(config: TrainConfig, hierarchy: Hierarchy, fail) -> None:
    """Each precomputed label folder: a tag dataset of this config, made by the generator for this hierarchy."""
    from training.labels.pseudo_labels.batch import SETTINGS_FILE, hierarchy_fingerprint

    names = [d.name for d in config.datasets]
    for name, entry in config.pseudo_labels.precomputed.items():
        key = f"pseudo_labels.precomputed.{name}"
        if name not in names:
            raise fail(key, f"dataset {name!r} is not one of the config's datasets ({', '.join(names)})")
        supervision = hierarchy.dataset(name).supervision
        if supervision != "tags":
            raise fail(
                key,
                f"dataset {name!r} has {supervision!r} supervision in hierarchy {hierarchy.name!r}; precomputed "
                "pseudo labels replace the uniform tiling of image-level-tag datasets only",
            )
        folder = Path(entry["dir"])
        if not folder.is_dir():
            raise fail(f"{key}.dir", f"no such folder {folder}")
        settings_path = folder / SETTINGS_FILE
        if not settings_path.is_file():
            raise fail(
                f"{key}.dir",
                f"{folder} has no {SETTINGS_FILE}: not a folder written by "
                "`python -m training.labels.pseudo_labels generate`",
            )
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"{key}.dir", f"cannot read {settings_path}: {exc}") from exc
        if not isinstance(settings, dict):
            raise fail(f"{key}.dir", f"{settings_path}: expected a JSON object")
        made_for = settings.get("dataset")
        if made_for is not None and made_for != name:
            raise fail(f"{key}.dir", f"{settings_path}: labels were made for dataset {made_for!r}, not {name!r}")
        made_output = (settings.get("generator") or {}).get("output")
        if made_output is not None and made_output != entry["output"]:
            raise fail(
                f"{key}.output",
                f"{entry['output']!r} but {settings_path} records output {made_output!r} "
                f"({'PNG' if made_output == 'hard' else '.npz'} label files)",
            )
        _check_label_hierarchy(settings, settings_path, hierarchy, hierarchy_fingerprint, lambda m, k=key: fail(k, m))


def _check_label_hierarchy(settings: dict, settings_path: Path, hierarchy: Hierarchy, fingerprint, fail) -> None:
    """Labels hold class ids of the hierarchy they were made with: it must be the training hierarchy.

    Newer settings record the hierarchy's fingerprint; older ones only the path given to the
    generator, which is then loaded (as given, i.e. relative to the working directory) and compared.
    """
    recorded = settings.get("hierarchy_sha256")
    if recorded is not None:
        if recorded != fingerprint(hierarchy):
            raise fail(
                f"labels in {settings_path.parent} were made with hierarchy {settings.get('hierarchy_name')!r} "
                f"({settings.get('hierarchy')}), which differs from the training hierarchy {hierarchy.name!r} "
                f"({hierarchy.source}); regenerate them with --hierarchy {hierarchy.source}"
            )
        return
    path = settings.get("hierarchy")
    if path is None:
        return
    try:
        theirs = load_hierarchy(path)
    except (HierarchyError, OSError) as exc:
        raise fail(f"{settings_path} records hierarchy {path}, which cannot be loaded to compare: {exc}") from exc
    if theirs != hierarchy:
        raise fail(
            f"labels in {settings_path.parent} were made with hierarchy {theirs.name!r} ({path}), which differs "
            f"from the training hierarchy {hierarchy.name!r} ({hierarchy.source})"
        )


def validate_config(config: TrainConfig) -> Hierarchy:
    """Values and cross-references (hierarchy, datasets, classifiers); returns the loaded hierarchy."""
    src = config.source

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{src}: {key}: {message}")

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
    if sum(d.per_batch for d in config.datasets) <= 0:
        raise fail("datasets", "a batch needs at least one sample (all per_batch are 0)")

    m = config.model
    if m.backbone not in BACKBONES:
        raise fail("model.backbone", f"unknown backbone {m.backbone!r} (expected one of {', '.join(BACKBONES)})")
    if m.output_stride not in (8, 16, 32):
        raise fail("model.output_stride", f"expected 8, 16 or 32, got {m.output_stride}")
    for key in ("shared_channels", "adaptation_depth", "adaptation_dilation"):
        if getattr(m, key) < (0 if key == "adaptation_depth" else 1):
            raise fail(f"model.{key}", f"out of range: {getattr(m, key)}")
    if m.pretrained not in (None, "default") and not Path(m.pretrained).is_file():
        raise fail("model.pretrained", f"no such file {m.pretrained}")

    try:
        config.augment_config()
    except ValueError as exc:
        raise fail("augment", str(exc)) from exc
    a = config.augment
    for key in ("brightness", "contrast"):
        if not 0 <= getattr(a, key) < 1:
            raise fail(f"augment.{key}", f"expected a fraction in [0, 1), got {getattr(a, key)}")
    if config.pseudo_labels.box_mode not in BOX_MODES:
        raise fail(
            "pseudo_labels.box_mode", f"expected one of {list(BOX_MODES)}, got {config.pseudo_labels.box_mode!r}"
        )
    if not 0 < config.pseudo_labels.min_mass <= 1:
        raise fail("pseudo_labels.min_mass", f"expected a number in (0, 1], got {config.pseudo_labels.min_mass}")
    _check_precomputed(config, hierarchy, fail)

    classifiers = set(hierarchy.classifier_names)
    class_names = {c.name for c in hierarchy.classes}
    for name, weight in config.loss.weights.items():
        key = f"loss.weights.{name}"
        if name not in classifiers:
            if name in class_names:
                raise fail(key, f"class {name!r} of hierarchy {hierarchy.name!r} owns no classifier (it is a leaf)")
            raise fail(
                key,
                f"unknown classifier {name!r} in hierarchy {hierarchy.name!r} "
                f"(classifiers: {', '.join(hierarchy.classifier_names)})",
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise fail(key, f"expected a number >= 0, got {weight!r}")

    o = config.optimizer
    if o.lr <= 0:
        raise fail("optimizer.lr", f"expected > 0, got {o.lr}")
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


def open_datasets(config: TrainConfig) -> list:
    """Construct the readers (indexes the files); a format problem names the config key and the file."""
    from training.data.readers import load_dataset

    readers = []
    for i, ds in enumerate(config.datasets):
        root = config.dataset_root(ds)
        try:
            readers.append(load_dataset(ds.name, root, **ds.options))
        except TypeError as exc:
            raise ConfigError(f"{config.source}: datasets[{i}].options: {exc}") from exc
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{config.source}: datasets[{i}] ({ds.name} at {root}): {exc}") from exc
    return readers


def check_datasets(config: TrainConfig, hierarchy: Hierarchy, readers: list | None = None) -> list:
    """Open the readers and check every native label they can produce is mapped by the hierarchy."""
    readers = open_datasets(config) if readers is None else readers
    for i, (ds, reader) in enumerate(zip(config.datasets, readers, strict=True)):
        mapping = hierarchy.dataset(ds.name)
        key = f"{config.source}: datasets[{i}]"
        if mapping.supervision == "tags":
            native = set(reader.class_names)
        else:
            native = set(getattr(reader, "native_ids", range(len(reader.class_names))))
        unmapped = sorted(
            native - set(mapping.ids), key=lambda u: (isinstance(u, str), u if isinstance(u, str) else int(u))
        )
        if unmapped:
            shown = ", ".join(repr(u) for u in unmapped[:20])
            raise ConfigError(
                f"{key}: labels of dataset {ds.name!r} do not fit hierarchy {hierarchy.name!r}: native "
                f"{'tags' if mapping.supervision == 'tags' else 'ids'} {shown} are not mapped "
                f"({len(unmapped)} in all)"
            )
    return readers
