"""Readers of the real on-disk dataset formats (docs/DATASET_FORMATS.md).

Each reader yields :class:`Sample` objects carrying *native* labels; mapping them
onto the semantic hierarchy is the caller's job. Reader names are the hierarchy's
dataset keys, so ``load_dataset(name, root)`` can be driven from configuration.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from training.data.readers.base import Box, DatasetFormatError, DatasetReader, Sample
from training.data.readers.cityscapes import CityscapesDataset
from training.data.readers.gtsdb import GTSDBDataset, parse_gtsdb_gt
from training.data.readers.image_tags import ImageTagsDataset, parse_class_descriptions
from training.data.readers.vistas import VistasDataset, parse_vistas_config

READERS: MappingProxyType[str, type[DatasetReader]] = MappingProxyType(
    {
        CityscapesDataset.name: CityscapesDataset,
        VistasDataset.name: VistasDataset,
        GTSDBDataset.name: GTSDBDataset,
        ImageTagsDataset.name: ImageTagsDataset,
    }
)


def load_dataset(name: str, root: Path | str, **kwargs: Any) -> DatasetReader:
    """Construct the reader called ``name`` ("cityscapes", "vistas", "gtsdb", "openscapes")."""
    try:
        reader = READERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r} (expected one of {', '.join(READERS)})") from None
    return reader(root, **kwargs)


__all__ = [
    "READERS",
    "Box",
    "CityscapesDataset",
    "DatasetFormatError",
    "DatasetReader",
    "GTSDBDataset",
    "ImageTagsDataset",
    "Sample",
    "VistasDataset",
    "load_dataset",
    "parse_class_descriptions",
    "parse_gtsdb_gt",
    "parse_vistas_config",
]
