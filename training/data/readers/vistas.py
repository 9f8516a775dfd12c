"""Mapillary Vistas: JPEG images with palette-PNG label maps indexing ``config.json`` labels.

Layouts (docs/DATASET_FORMATS.md)::

    v1.2  {root}/config.json          {root}/{split}/labels/{key}.png
    v2.0  {root}/config_v2.0.json     {root}/{split}/v2.0/labels/{key}.png
    both  {root}/{split}/images/{key}.jpg

The v2.0 release also ships its v1.2 copy as ``config_v1.2.json`` +
``{split}/v1.2/labels``, accepted as v1.2. With ``version=None`` the layout is
detected from the label folders present; when both are present v1.2 wins, since
v1.2 ids are the ones ``label_tables.VISTAS_V12_LABELS`` and the hierarchy use.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.data.readers.base import (
    DatasetFormatError,
    DatasetReader,
    Sample,
    check_ids_below,
    check_paired,
    check_same_size,
    files_with_suffix,
    read_index_png,
    read_rgb,
    require_dir,
    require_file,
)
from training.data.readers.label_tables import VistasLabel

SPLITS = ("training", "validation", "testing")
VERSIONS = ("v1.2", "v2.0")
# Candidate (config file, label folder under {split}) pairs of each version, preferred first.
_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "v1.2": (("config.json", "config_v1.2.json"), ("labels", "v1.2/labels")),
    "v2.0": (("config_v2.0.json",), ("v2.0/labels",)),
}


def parse_vistas_config(path: Path) -> tuple[VistasLabel, ...]:
    """The ``labels`` list of a Vistas config file; list index == label PNG value."""
    require_file(path, "Vistas config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(path, f"cannot read config ({exc})") from exc
    entries = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetFormatError(path, 'expected a JSON object with a non-empty "labels" list')
    if len(entries) > 256:
        raise DatasetFormatError(path, f"{len(entries)} labels do not fit the 8-bit label PNGs (expected <= 256)")
    return tuple(_parse_label(path, i, entry) for i, entry in enumerate(entries))


def _parse_label(path: Path, i: int, entry: object) -> VistasLabel:
    where = f'"labels"[{i}]'
    if not isinstance(entry, dict):
        raise DatasetFormatError(path, f"{where} is not an object (expected name, color, ...)")
    name, color = entry.get("name"), entry.get("color")
    if not isinstance(name, str) or not name:
        raise DatasetFormatError(path, f'{where} has no "name" string')
    if (
        not isinstance(color, list)
        or len(color) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        raise DatasetFormatError(path, f'{where} ({name}) has no "color" [r, g, b] of integers 0..255')
    return VistasLabel(
        name=name,
        readable=str(entry.get("readable", name)),
        color=(color[0], color[1], color[2]),
        instances=bool(entry.get("instances", False)),
        evaluate=bool(entry.get("evaluate", True)),
    )


class VistasDataset(DatasetReader):
    """One split of Mapillary Vistas (v1.2 or v2.0 label layout)."""

    name = "vistas"

    def __init__(self, root: Path | str, split: str = "training", version: str | None = None) -> None:
        super().__init__(root)
        self.split = split
        require_dir(self.root, "Vistas root")
        split_dir = require_dir(self.root / split, f"Vistas {split} split")
        image_dir = require_dir(split_dir / "images", "Vistas images")
        self.version, self.config_path, label_dir = _resolve_layout(self.root, split_dir, version)
        self.labels = parse_vistas_config(self.config_path)
        self._images = files_with_suffix(image_dir, ".jpg")
        self._labels = files_with_suffix(label_dir, ".png")
        rel = label_dir.relative_to(self.root)
        check_paired(self._images, self._labels, f"{rel}/{{key}}.png", f"{split}/images/{{key}}.jpg")
        self._set_ids(self._images, image_dir, "{key}.jpg images")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def native_ids(self) -> frozenset[int]:
        return frozenset(range(len(self.labels)))

    def _load(self, i: int) -> Sample:
        sample_id = self._ids[i]
        image_path, label_path = self._images[sample_id], self._labels[sample_id]
        image = read_rgb(image_path)
        label = read_index_png(label_path)
        check_same_size(label, image, label_path, image_path)
        check_ids_below(
            label,
            len(self.labels),
            label_path,
            f"indices 0..{len(self.labels) - 1} of {self.config_path.name}",
        )
        return Sample(self.name, sample_id, image, label, image_path=image_path, label_path=label_path)


def _normalise_version(version: str) -> str:
    text = version if version.startswith("v") else f"v{version}"
    if text not in VERSIONS:
        raise ValueError(f"unknown Vistas version {version!r} (expected one of {', '.join(VERSIONS)})")
    return text


def _resolve_layout(root: Path, split_dir: Path, version: str | None) -> tuple[str, Path, Path]:
    """(version, config file, label folder) of the layout on disk."""
    wanted = VERSIONS if version is None else (_normalise_version(version),)
    for candidate in wanted:
        configs, label_dirs = _LAYOUTS[candidate]
        label_dir = next((split_dir / d for d in label_dirs if (split_dir / d).is_dir()), None)
        if label_dir is None:
            continue
        config = next((root / c for c in configs if (root / c).is_file()), root / configs[0])
        return candidate, config, label_dir
    expected = " or ".join(str(split_dir / d) for v in wanted for d in _LAYOUTS[v][1])
    raise DatasetFormatError(split_dir, f"missing Vistas label folder (expected {expected})")
