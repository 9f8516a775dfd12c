"""Data model shared by all dataset readers, and the file helpers they share.

Every reader indexes its files when constructed (directory listings and the small
text/CSV/JSON annotation files only) and decodes images lazily in ``__getitem__``,
so building a reader over a full dataset is cheap and a broken file is reported
when, and where, it is met. Every problem with the files on disk is raised as a
:class:`DatasetFormatError` whose message names the file (and line for text files)
and what was expected, because "KeyError: 3" after an hour of training is useless.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

# How many offending values an error message lists before it says "... and N more".
_MAX_LISTED = 20


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in inclusive pixel coordinates (GTSDB convention)."""

    x0: int
    y0: int
    x1: int
    y1: int
    label: int | str  # native class id (GTSDB 0..42) or tag name (image-level sets)


@dataclass
class Sample:
    """One decoded image with its native annotation, before any hierarchy mapping."""

    dataset: str  # reader name, matches the hierarchy's dataset keys
    sample_id: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray | None  # H x W native ids for per-pixel sets, else None
    boxes: tuple[Box, ...] = ()
    tags: tuple[str, ...] = ()  # image-level positive tags, lower-case
    image_path: Path | None = None
    label_path: Path | None = None


class DatasetFormatError(ValueError):
    """A dataset file is missing or does not have the expected format.

    The message always starts with ``path`` (``path:line`` for text files) so it
    can be pasted into an editor or a bug report as is.
    """

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the structured fields across pickling (DataLoader workers)
        return (type(self), (self.path, self.problem, self.line))


class DatasetReader(ABC):
    """Indexed, lazily decoded dataset: ``len``, ``ds[i]``, iteration, ``sample_ids``.

    Subclasses fill ``self._ids`` (sorted, so indices are stable between runs and
    machines) in their constructor and implement :meth:`_load`.
    """

    name: ClassVar[str]
    # Horizontal flips in training (training.data.augment): whether this reader's samples may be
    # mirrored, and which native ids become each other in a mirror (swapped when a crop is flipped).
    flip: bool = True
    mirror_classes: ClassVar[Mapping[int, int]] = MappingProxyType({})

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._ids: tuple[str, ...] = ()
        self._index: dict[str, int] = {}

    def _set_ids(self, ids: Iterable[str], where: Path, expected: str) -> None:
        """Store the sorted sample ids; an empty selection is an error, not a silent no-op."""
        self._ids = tuple(sorted(ids))
        if not self._ids:
            raise DatasetFormatError(where, f"no samples found (expected {expected})")
        self._index = {sample_id: i for i, sample_id in enumerate(self._ids)}

    @property
    def sample_ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Native class names; for id-labelled sets the position is the native id."""

    def index_of(self, sample_id: str) -> int:
        """Position of ``sample_id``; KeyError if this reader did not index it."""
        return self._index[sample_id]

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Sample:
        i = operator.index(index)
        n = len(self._ids)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        return self._load(i % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self._ids)):
            yield self._load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, samples={len(self)})"

    @abstractmethod
    def _load(self, i: int) -> Sample:
        """Decode sample ``i`` (0 <= i < len)."""


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetFormatError(path, f"missing {what} folder")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetFormatError(path, f"missing {what} file")
    return path


def files_with_suffix(folder: Path, suffix: str) -> dict[str, Path]:
    """Map the part of each file name before ``suffix`` to its path (one directory level)."""
    return {p.name[: -len(suffix)]: p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()}


def list_some(values: Iterable[object]) -> str:
    """Comma-separated values, shortened so an error message stays readable."""
    values = list(values)
    text = ", ".join(str(v) for v in values[:_MAX_LISTED])
    if len(values) > _MAX_LISTED:
        text += f", ... and {len(values) - _MAX_LISTED} more"
    return text


def check_paired(images: dict[str, Path], labels: dict[str, Path], label_for: str, image_for: str) -> list[str]:
    """Keys present in both; a file whose counterpart is missing is an error naming it.

    ``label_for``/``image_for`` describe the missing counterpart's expected file name.
    """
    no_label = sorted(images.keys() - labels.keys())
    if no_label:
        first = no_label[0]
        more = f" ({len(no_label) - 1} more images lack labels)" if len(no_label) > 1 else ""
        raise DatasetFormatError(images[first], f"image has no label file {label_for.format(key=first)}{more}")
    no_image = sorted(labels.keys() - images.keys())
    if no_image:
        first = no_image[0]
        more = f" ({len(no_image) - 1} more labels lack images)" if len(no_image) > 1 else ""
        raise DatasetFormatError(labels[first], f"label has no image file {image_for.format(key=first)}{more}")
    return sorted(images.keys())


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise DatasetFormatError(path, "file is empty (expected an image)")
    return data


def read_rgb(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG/PPM as H x W x 3 uint8 RGB.

    ``cv2.imdecode`` (not ``imread``) because it refuses truncated JPEGs that
    ``imread`` half-decodes; EXIF orientation is ignored because the label maps
    are aligned with the stored pixels, not with the rotated view.
    """
    image = cv2.imdecode(_read_bytes(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DatasetFormatError(path, "cannot decode image (truncated or corrupt; expected PNG, JPEG or PPM)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_png_unchanged(path: Path) -> np.ndarray:
    """Decode a PNG keeping its channels and bit depth (single-channel id maps)."""
    image = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetFormatError(path, "cannot decode PNG (truncated or corrupt)")
    return image


def read_index_png(path: Path) -> np.ndarray:
    """Pixel values of a palette ("P") or grey ("L") PNG, as uint8 indices.

    PIL, never cv2: cv2 expands a palette PNG to its colours, losing the ids.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            values = np.asarray(image) if mode in ("P", "L") else None
    except FileNotFoundError as exc:
        raise DatasetFormatError(path, "missing label file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetFormatError(path, f"cannot decode PNG (truncated or corrupt: {exc})") from exc
    if values is None:
        raise DatasetFormatError(
            path, f"expected an 8-bit palette ('P') or single-channel ('L') label PNG, got mode {mode!r}"
        )
    return values


def check_same_size(label: np.ndarray, image: np.ndarray, label_path: Path, image_path: Path) -> None:
    if label.shape[:2] != image.shape[:2]:
        lh, lw = label.shape[:2]
        ih, iw = image.shape[:2]
        raise DatasetFormatError(
            label_path,
            f"label is {lw}x{lh} but its image {image_path.name} is {iw}x{ih} (expected the same size)",
        )


def check_ids_below(label: np.ndarray, limit: int, path: Path, expected: str) -> None:
    """Reject label values >= ``limit``, listing the offending ids."""
    if label.size and int(label.max()) >= limit:
        bad = np.unique(label[label >= limit]).tolist()
        raise DatasetFormatError(path, f"unknown label ids {list_some(bad)} (expected {expected})")
