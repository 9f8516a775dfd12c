"""Cityscapes fine annotations: ``leftImg8bit`` images with ``gtFine`` labelId maps.

Layout (docs/DATASET_FORMATS.md)::

    {root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Only the labelIds maps are read; instanceIds, colour and polygon files next to
them are ignored. Sample ids are ``{city}_{seq}_{frame}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from training.data.readers.base import (
    DatasetFormatError,
    DatasetReader,
    Sample,
    check_ids_below,
    check_paired,
    check_same_size,
    files_with_suffix,
    read_png_unchanged,
    read_rgb,
    require_dir,
)
from training.data.readers.label_tables import CITYSCAPES_LABELS, CITYSCAPES_PNG_IDS

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val", "test")
# labelIds PNG values are the contiguous ids 0..33.
_NUM_PNG_IDS = max(CITYSCAPES_PNG_IDS) + 1


class CityscapesDataset(DatasetReader):
    """One split of Cityscapes gtFine, optionally restricted to some cities."""

    name = "cityscapes"

    def __init__(self, root: Path | str, split: str = "train", cities: Iterable[str] | None = None) -> None:
        super().__init__(root)
        self.split = split
        require_dir(self.root, "Cityscapes root")
        image_dir = require_dir(self.root / "leftImg8bit" / split, f"Cityscapes leftImg8bit/{split} split")
        label_dir = require_dir(self.root / "gtFine" / split, f"Cityscapes gtFine/{split} split")
        if cities is None:
            found = {p.name for d in (image_dir, label_dir) for p in d.iterdir() if p.is_dir()}
            self.cities = tuple(sorted(found))
        else:
            self.cities = tuple(sorted(set(cities)))
        self._images: dict[str, Path] = {}
        self._labels: dict[str, Path] = {}
        for city in self.cities:
            images = _city_files(image_dir / city, city, IMAGE_SUFFIX, "leftImg8bit")
            labels = _city_files(label_dir / city, city, LABEL_SUFFIX, "gtFine")
            check_paired(images, labels, "{key}" + LABEL_SUFFIX, "{key}" + IMAGE_SUFFIX)
            self._images.update(images)
            self._labels.update(labels)
        self._set_ids(self._images, image_dir, f"{{city}}/{{city}}_{{seq}}_{{frame}}{IMAGE_SUFFIX} files")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each labelId 0..33 (index == id)."""
        by_id = {label.id: label.name for label in CITYSCAPES_LABELS}
        return tuple(by_id[i] for i in range(_NUM_PNG_IDS))

    @property
    def native_ids(self) -> frozenset[int]:
        return CITYSCAPES_PNG_IDS

    def _load(self, i: int) -> Sample:
        sample_id = self._ids[i]
        image_path, label_path = self._images[sample_id], self._labels[sample_id]
        image = read_rgb(image_path)
        label = read_png_unchanged(label_path)
        if label.ndim != 2 or label.dtype.itemsize != 1:
            channels = 1 if label.ndim == 2 else label.shape[2]
            raise DatasetFormatError(
                label_path,
                f"expected an 8-bit single-channel labelIds PNG, got {channels} channel(s) of {label.dtype}",
            )
        check_same_size(label, image, label_path, image_path)
        check_ids_below(label, _NUM_PNG_IDS, label_path, "Cityscapes labelIds 0..33")
        return Sample(self.name, sample_id, image, label, image_path=image_path, label_path=label_path)


def _city_files(folder: Path, city: str, suffix: str, tree: str) -> dict[str, Path]:
    """``{city}_{seq}_{frame}`` -> path for one city folder, rejecting misnamed files."""
    require_dir(folder, f"Cityscapes {tree} city")
    files = files_with_suffix(folder, suffix)
    pattern = re.compile(rf"{re.escape(city)}_\d{{6}}_\d{{6}}")
    for key in sorted(files):
        if not pattern.fullmatch(key):
            raise DatasetFormatError(files[key], f"file name does not match {city}_<seq:06d>_<frame:06d>{suffix}")
    return files
