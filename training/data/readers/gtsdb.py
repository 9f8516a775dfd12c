"""German Traffic Sign Detection Benchmark: PPM images and one ``gt.txt`` of sign boxes.

Layout (docs/DATASET_FORMATS.md)::

    {root}/00000.ppm ... {root}/NNNNN.ppm
    {root}/gt.txt        ImgNo.ppm;leftCol;topRow;rightCol;bottomRow;ClassID   (inclusive pixels)

Images without signs have no line in gt.txt and load with no boxes. Box bounds
against the image size are checked when the image is decoded, since indexing
does not open images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

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
from training.data.readers.label_tables import GTSDB_CLASSES, GTSDB_MIRROR_PAIRS

GT_FILE = "gt.txt"
# Split of the real benchmark by image number: 00000-00599 train, 00600-00899 test. The one split
# definition: sets written in this format (training.data.synthetic) number their images by it
# (:func:`split_number`), so ``split=`` selects the same images on real and written sets.
SPLITS: dict[str, range] = {"train": range(0, 600), "test": range(600, 900)}
_FIELDS = ("ImgNo.ppm", "leftCol", "topRow", "rightCol", "bottomRow", "ClassID")


def split_number(split: str, index: int) -> int:
    """File number (``NNNNN.ppm``) of the ``index``-th image of ``split`` in the benchmark's numbering.

    For writers of GTSDB-format sets: the test images of a set numbered from 0 would otherwise fall
    into the ``train`` range and be trained on.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown GTSDB split {split!r} (expected one of {', '.join(SPLITS)})")
    numbers = SPLITS[split]
    if not 0 <= index < len(numbers):
        raise ValueError(
            f"GTSDB split {split!r} holds {len(numbers)} images ({numbers.start:05d}..{numbers.stop - 1:05d}.ppm), "
            f"no image {index}"
        )
    return numbers[index]


@dataclass(frozen=True)
class GroundTruthLine:
    """One gt.txt sign with its line number, kept for errors found at load time."""

    image: str  # sample id (file name without .ppm)
    box: Box
    line: int


def parse_gtsdb_gt(path: Path, image_names: Iterable[str]) -> list[GroundTruthLine]:
    """Parse gt.txt; ``image_names`` are the .ppm file names present (gt lines must name one)."""
    present = set(image_names)
    require_file(path, "GTSDB ground truth")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(path, f"cannot read ground truth as ASCII text ({exc})") from exc
    result = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(";")]
        if len(fields) != len(_FIELDS):
            raise DatasetFormatError(
                path, f"{len(fields)} fields, expected {len(_FIELDS)}: {';'.join(_FIELDS)}", number
            )
        name = fields[0]
        try:
            x0, y0, x1, y1, class_id = (int(f) for f in fields[1:])
        except ValueError as exc:
            raise DatasetFormatError(path, f"non-integer field in {line!r} (expected integers)", number) from exc
        if not 0 <= class_id < len(GTSDB_CLASSES):
            raise DatasetFormatError(path, f"ClassID {class_id} outside 0..{len(GTSDB_CLASSES) - 1}", number)
        if x0 < 0 or y0 < 0 or x1 < x0 or y1 < y0:
            raise DatasetFormatError(
                path,
                f"box ({x0},{y0})-({x1},{y1}) expected 0 <= left <= right and 0 <= top <= bottom",
                number,
            )
        if name not in present:
            raise DatasetFormatError(path, f"names image {name} which does not exist in {path.parent}", number)
        result.append(GroundTruthLine(name.removesuffix(".ppm"), Box(x0, y0, x1, y1, class_id), number))
    return result


class GTSDBDataset(DatasetReader):
    """GTSDB images, all present or a selection by image number or by split.

    ``flip`` (a config ``options`` key): whether training may mirror these images; off by default.
    A mirrored sign of one of :data:`GTSDB_MIRROR_PAIRS` is its partner, and the augmentation swaps
    those labels (:attr:`mirror_classes`), but most classes carry digits ("30", "120") or text
    ("STOP") whose mirror image is no sign at all and has no class to swap to: a flipped crop would
    teach the network mirrored digits under their original class.
    """

    name = "gtsdb"
    mirror_classes = MappingProxyType({**dict(GTSDB_MIRROR_PAIRS), **{b: a for a, b in GTSDB_MIRROR_PAIRS}})

    def __init__(
        self,
        root: Path | str,
        image_ids: Iterable[int | str] | None = None,
        split: str | None = None,
        flip: bool = False,
    ) -> None:
        super().__init__(root)
        if image_ids is not None and split is not None:
            raise ValueError("give image_ids or split, not both")
        if not isinstance(flip, bool):
            raise TypeError(f"GTSDB option flip: expected true or false, got {flip!r}")
        self.flip = flip
        require_dir(self.root, "GTSDB root")
        self.gt_path = self.root / GT_FILE
        images = files_with_suffix(self.root, ".ppm")
        self._lines: dict[str, list[GroundTruthLine]] = {}
        for gt in parse_gtsdb_gt(self.gt_path, (f"{key}.ppm" for key in images)):
            self._lines.setdefault(gt.image, []).append(gt)
        if image_ids is not None:
            wanted = [f"{i:05d}" if isinstance(i, int) else str(i).removesuffix(".ppm") for i in image_ids]
            for key in wanted:
                if key not in images:
                    raise DatasetFormatError(self.root / f"{key}.ppm", "requested GTSDB image does not exist")
            selected = set(wanted)
            expected = "the requested images"
        elif split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown GTSDB split {split!r} (expected one of {', '.join(SPLITS)})")
            numbers = SPLITS[split]
            selected = {key for key in images if key.isdigit() and int(key) in numbers}
            expected = f"{split} images {numbers.start:05d}..{numbers.stop - 1:05d}.ppm"
        else:
            selected = set(images)
            expected = "NNNNN.ppm images"
        self._images = {key: images[key] for key in selected}
        self._set_ids(selected, self.root, expected)

    @property
    def class_names(self) -> tuple[str, ...]:
        return GTSDB_CLASSES

    @property
    def native_ids(self) -> frozenset[int]:
        return frozenset(range(len(GTSDB_CLASSES)))

    def _load(self, i: int) -> Sample:
        sample_id = self._ids[i]
        image_path = self._images[sample_id]
        image = read_rgb(image_path)
        height, width = image.shape[:2]
        lines = self._lines.get(sample_id, [])
        for gt in lines:
            if gt.box.x1 >= width or gt.box.y1 >= height:
                raise DatasetFormatError(
                    self.gt_path,
                    f"box ({gt.box.x0},{gt.box.y0})-({gt.box.x1},{gt.box.y1}) outside {image_path.name} "
                    f"of {width}x{height} (expected right < width, bottom < height)",
                    gt.line,
                )
        return Sample(
            self.name,
            sample_id,
            image,
            None,
            boxes=tuple(gt.box for gt in lines),
            image_path=image_path,
            label_path=self.gt_path,
        )
