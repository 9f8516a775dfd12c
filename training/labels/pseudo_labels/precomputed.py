"""Precomputed pseudo-label folders as a training input (the training config's ``pseudo_labels.precomputed``).

An entry ``DATASET: {dir: DIR, output: hard | soft}`` replaces the IV 2019 uniform tiling of an
image-level-tag dataset by the labels ``python -m training.labels.pseudo_labels generate`` wrote into
``DIR`` (read by :class:`~training.labels.pseudo_labels.generator.PrecomputedLabels`). The folder's
settings file (:data:`~training.labels.pseudo_labels.batch.SETTINGS_FILE`, written by
:func:`~training.labels.pseudo_labels.batch.generate_labels`) must say the labels were made for this
dataset, with this ``output`` and this hierarchy (their PNGs hold its class ids): checked here, before
any training, so the training config need not know the generator's file format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hiseg_ros.hierarchy import Hierarchy, HierarchyError, load_hierarchy
from training.config_schema import ConfigSource, parse_dataclass
from training.labels.pseudo_labels.batch import SETTINGS_FILE, hierarchy_fingerprint
from training.labels.pseudo_labels.generator import Output, PrecomputedLabels


@dataclass(frozen=True)
class PrecomputedSource:
    """One dataset's precomputed labels: the generator's ``--out`` folder and its ``--output``."""

    dir: str
    output: Output = "hard"


def parse_precomputed(raw: Any, where: str, source: ConfigSource) -> dict[str, PrecomputedSource]:
    """The entries of the mapping ``raw`` at dotted key ``where`` (types and keys only, no file access)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise source.error(where, f"expected a mapping {{DATASET: {{dir: DIR, output: hard | soft}}}}, got {raw!r}")
    return {
        str(name): parse_dataclass(
            PrecomputedSource, entry, f"{where}.{name}", source, required={"dir": "folder written by the generator"}
        )
        for name, entry in raw.items()
    }


def label_generators(sources: Mapping[str, PrecomputedSource], hierarchy: Hierarchy) -> dict[str, PrecomputedLabels]:
    """``TargetBuilder`` generators, one per dataset with precomputed labels."""
    return {name: PrecomputedLabels(hierarchy, Path(s.dir), s.output) for name, s in sources.items()}


def check_precomputed(
    sources: Mapping[str, PrecomputedSource],
    datasets: Sequence[str],
    hierarchy: Hierarchy,
    where: str,
    source: ConfigSource,
) -> None:
    """Each folder: for a tag dataset among ``datasets``, made by the generator for it and ``hierarchy``."""
    for name, entry in sources.items():
        key = f"{where}.{name}"
        if name not in datasets:
            raise source.error(key, f"dataset {name!r} is not one of the config's datasets ({', '.join(datasets)})")
        supervision = hierarchy.dataset(name).supervision
        if supervision != "tags":
            raise source.error(
                key,
                f"dataset {name!r} has {supervision!r} supervision in hierarchy {hierarchy.name!r}; precomputed "
                "pseudo labels replace the uniform tiling of image-level-tag datasets only",
            )
        settings_path = _settings_path(Path(entry.dir), f"{key}.dir", source)
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise source.error(f"{key}.dir", f"cannot read {settings_path}: {exc}") from exc
        if not isinstance(settings, dict):
            raise source.error(f"{key}.dir", f"{settings_path}: expected a JSON object")
        made_for = settings.get("dataset")
        if made_for is not None and made_for != name:
            raise source.error(
                f"{key}.dir", f"{settings_path}: labels were made for dataset {made_for!r}, not {name!r}"
            )
        made_output = (settings.get("generator") or {}).get("output")
        if made_output is not None and made_output != entry.output:
            raise source.error(
                f"{key}.output",
                f"{entry.output!r} but {settings_path} records output {made_output!r} "
                f"({'PNG' if made_output == 'hard' else '.npz'} label files)",
            )
        problem = _hierarchy_mismatch(settings, settings_path, hierarchy)
        if problem:
            raise source.error(key, problem)


def _settings_path(folder: Path, key: str, source: ConfigSource) -> Path:
    if not folder.is_dir():
        raise source.error(key, f"no such folder {folder}")
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise source.error(
            key,
            f"{folder} has no {SETTINGS_FILE}: not a folder written by "
            "`python -m training.labels.pseudo_labels generate`",
        )
    return path


def _hierarchy_mismatch(settings: dict, settings_path: Path, hierarchy: Hierarchy) -> str | None:
    """Why the labels' hierarchy is not ``hierarchy`` (their PNGs hold its class ids), or None.

    Newer settings record the hierarchy's fingerprint; older ones only the path given to the
    generator, which is then loaded (as given, i.e. relative to the working directory) and compared.
    """
    recorded = settings.get("hierarchy_sha256")
    if recorded is not None:
        if recorded == hierarchy_fingerprint(hierarchy):
            return None
        return (
            f"labels in {settings_path.parent} were made with hierarchy {settings.get('hierarchy_name')!r} "
            f"({settings.get('hierarchy')}), which differs from the training hierarchy {hierarchy.name!r} "
            f"({hierarchy.source}); regenerate them with --hierarchy {hierarchy.source}"
        )
    path = settings.get("hierarchy")
    if path is None:
        return None
    try:
        theirs = load_hierarchy(path)
    except (HierarchyError, OSError) as exc:
        return f"{settings_path} records hierarchy {path}, which cannot be loaded to compare: {exc}"
    if theirs == hierarchy:
        return None
    return (
        f"labels in {settings_path.parent} were made with hierarchy {theirs.name!r} ({path}), which differs "
        f"from the training hierarchy {hierarchy.name!r} ({hierarchy.source})"
    )
