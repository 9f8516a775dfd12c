"""Image-level tags in the Open Images CSV format (OpenScapes street scenes).

Layout (docs/DATASET_FORMATS.md), under ``root`` or ``root/split``::

    images/{ImageID}.jpg
    class-descriptions.csv   MID,DisplayName                      (no header)
    image-labels.csv         ImageID,Source,LabelName,Confidence  (LabelName is a MID)
    boxes.csv  (optional)    ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,...  normalised

Tags are lower-case DisplayNames kept only if in ``vocabulary`` (the 14
OpenScapes classes by default; ``None`` keeps all). A row is a positive tag when
its Confidence >= ``min_confidence``; Confidence 0 rows are "verified absent" and
are available through :meth:`ImageTagsDataset.absent_tags`, never as tags. Boxes
become :class:`Box` with the tag name as label, converted to inclusive pixels
with the image size once the image is decoded. The ``ground_truth/`` folder of
synthetic sets is ignored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from training.data.readers.base import (
    Box,
    DatasetFormatError,
    DatasetReader,
    Sample,
    files_with_suffix,
    read_rgb,
    require_dir,
    require_file,
)
from training.data.readers.label_tables import OPENSCAPES_TAGS

CLASS_DESCRIPTIONS = "class-descriptions.csv"
IMAGE_LABELS = "image-labels.csv"
BOXES = "boxes.csv"
_LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
_BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


@dataclass(frozen=True)
class NormalisedBox:
    """boxes.csv row: edges as fractions of the image width/height."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    tag: str

    def to_pixels(self, width: int, height: int) -> Box:
        """Inclusive pixel box: columns round(XMin*W) .. round(XMax*W)-1, at least one pixel."""
        x0 = min(round(self.x_min * width), width - 1)
        y0 = min(round(self.y_min * height), height - 1)
        x1 = max(x0, min(round(self.x_max * width) - 1, width - 1))
        y1 = max(y0, min(round(self.y_max * height) - 1, height - 1))
        return Box(x0, y0, x1, y1, self.tag)


def parse_class_descriptions(path: Path) -> dict[str, str]:
    """MID -> lower-case DisplayName. Tolerates the ``LabelName,DisplayName`` header of newer releases."""
    require_file(path, "class descriptions CSV")
    names: dict[str, str] = {}
    for line, row in _csv_rows(path):
        if line == 1 and row == ["LabelName", "DisplayName"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetFormatError(path, f"expected 2 non-empty fields MID,DisplayName, got {row!r}", line)
        mid, name = row[0].strip(), row[1].strip().lower()
        if names.get(mid, name) != name:
            raise DatasetFormatError(path, f"MID {mid} described twice ({names[mid]!r}, {name!r})", line)
        names[mid] = name
    return names


class ImageTagsDataset(DatasetReader):
    """Open Images style image-level labels (+ optional boxes) of one folder or split."""

    name = "openscapes"

    def __init__(
        self,
        root: Path | str,
        split: str | None = None,
        vocabulary: Iterable[str] | None = OPENSCAPES_TAGS,
        min_confidence: float = 0.5,
    ) -> None:
        super().__init__(root)
        self.split = split
        require_dir(self.root, "image tags root")
        self.base = require_dir(self.root / split, f"{split} split") if split is not None else self.root
        image_dir = require_dir(self.base / "images", "images")
        self._images = files_with_suffix(image_dir, ".jpg")
        self.mid_names = parse_class_descriptions(self.base / CLASS_DESCRIPTIONS)
        self.vocabulary = None if vocabulary is None else tuple(t.lower() for t in vocabulary)
        self.min_confidence = min_confidence
        self._tags: dict[str, set[str]] = {}
        self._absent: dict[str, set[str]] = {}
        self._read_labels(require_file(self.base / IMAGE_LABELS, "image labels CSV"))
        self._boxes: dict[str, list[NormalisedBox]] = {}
        if (self.base / BOXES).is_file():
            self._read_boxes(self.base / BOXES)
        self._set_ids(self._images, image_dir, "{ImageID}.jpg images")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The tag vocabulary (all described names when ``vocabulary`` is None)."""
        if self.vocabulary is not None:
            return self.vocabulary
        return tuple(sorted(set(self.mid_names.values())))

    def absent_tags(self, index: int) -> tuple[str, ...]:
        """Tags verified absent (Confidence 0) for sample ``index``: negatives for tag training."""
        return tuple(sorted(self._absent.get(self._ids[index], ())))

    def _load(self, i: int) -> Sample:
        sample_id = self._ids[i]
        image_path = self._images[sample_id]
        image = read_rgb(image_path)
        height, width = image.shape[:2]
        boxes = tuple(b.to_pixels(width, height) for b in self._boxes.get(sample_id, ()))
        tags = tuple(sorted(self._tags.get(sample_id, ())))
        return Sample(self.name, sample_id, image, None, boxes=boxes, tags=tags, image_path=image_path)

    def _keep(self, tag: str) -> bool:
        return self.vocabulary is None or tag in self.vocabulary

    def _read_labels(self, path: Path) -> None:
        for line, row in _csv_records(path, _LABEL_COLUMNS):
            image_id, tag = self._image_and_tag(path, line, row)
            confidence = _number(path, line, row, "Confidence")
            if not self._keep(tag):
                continue
            if confidence >= self.min_confidence:
                self._tags.setdefault(image_id, set()).add(tag)
                self._absent.get(image_id, set()).discard(tag)
            elif confidence == 0 and tag not in self._tags.get(image_id, ()):
                self._absent.setdefault(image_id, set()).add(tag)

    def _read_boxes(self, path: Path) -> None:
        for line, row in _csv_records(path, _BOX_COLUMNS):
            image_id, tag = self._image_and_tag(path, line, row)
            x_min, x_max, y_min, y_max = (_number(path, line, row, c) for c in ("XMin", "XMax", "YMin", "YMax"))
            if not (0 <= x_min <= x_max <= 1 and 0 <= y_min <= y_max <= 1):
                raise DatasetFormatError(
                    path, "expected 0 <= XMin <= XMax <= 1 and 0 <= YMin <= YMax <= 1 (normalised)", line
                )
            if "Confidence" in row and _number(path, line, row, "Confidence") < self.min_confidence:
                continue
            if self._keep(tag):
                self._boxes.setdefault(image_id, []).append(NormalisedBox(x_min, x_max, y_min, y_max, tag))

    def _image_and_tag(self, path: Path, line: int, row: dict[str, str]) -> tuple[str, str]:
        image_id, mid = row["ImageID"], row["LabelName"]
        if mid not in self.mid_names:
            raise DatasetFormatError(path, f"unknown MID {mid!r} (not in {CLASS_DESCRIPTIONS})", line)
        if image_id not in self._images:
            raise DatasetFormatError(path, f"ImageID {image_id!r} has no image images/{image_id}.jpg", line)
        return image_id, self.mid_names[mid]


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of the non-empty rows; line is where the row ends (quoted newlines)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row and any(field.strip() for field in row):
                    yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(path, f"cannot parse as UTF-8 CSV ({exc})") from exc


def _csv_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows as column -> value, after checking the header has ``required`` columns."""
    rows = _csv_rows(path)
    header_line, header = next(rows, (1, []))
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetFormatError(
            path,
            f"header lacks column(s) {', '.join(missing)} (expected at least {', '.join(required)})",
            header_line,
        )
    for line, row in rows:
        if len(row) != len(header):
            raise DatasetFormatError(path, f"{len(row)} fields, expected {len(header)} as in the header", line)
        yield line, {column: value.strip() for column, value in zip(header, row, strict=True)}


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except ValueError as exc:
        raise DatasetFormatError(path, f"{column} {row[column]!r} is not a number", line) from exc
    if column == "Confidence" and not 0 <= value <= 1:
        raise DatasetFormatError(path, f"Confidence {value} outside 0..1", line)
    return value
