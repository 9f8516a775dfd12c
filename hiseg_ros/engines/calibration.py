"""Calibration images for INT8 TensorRT engines (pure numpy / OpenCV: testable without TensorRT).

TensorRT's entropy calibrator pulls batches of exactly its declared size at the calibration
profile's shape, so the batcher letterboxes every image to that shape (keeping the aspect ratio,
as the node's resize policy does, and padding with the ImageNet mean, which normalises to ~0) and
yields only full ``B x H x W x 3`` uint8 RGB batches; the incomplete tail is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .base import PAD_VALUE_RGB

__all__ = ["IMAGE_SUFFIXES", "CalibrationBatcher", "CalibrationError", "letterbox", "list_images", "read_rgb"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


class CalibrationError(ValueError):
    """The calibration folder cannot supply the batches (missing, empty, unreadable image)."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (a fixed order makes calibration repeatable)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist or is not a directory")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CalibrationError(f"calibration folder {folder} cannot be listed: {exc}") from None
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB of an image file; :class:`CalibrationError` naming the file otherwise."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: no trouble with non-ASCII paths
    except OSError as exc:
        raise CalibrationError(f"calibration image {path} cannot be read: {exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise CalibrationError(f"calibration image {path} is not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def letterbox(
    image: np.ndarray, shape_hw: tuple[int, int], pad_value: tuple[int, int, int] = PAD_VALUE_RGB
) -> np.ndarray:
    """Scale ``image`` to fit ``shape_hw`` keeping its aspect ratio, centre it, pad the rest."""
    out_h, out_w = shape_hw
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation) if (new_h, new_w) != (h, w) else image
    out = np.empty((out_h, out_w, 3), np.uint8)
    out[:] = np.asarray(pad_value, np.uint8)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


@dataclass
class CalibrationBatcher:
    """Full uint8 NHWC batches of ``batch_size`` letterboxed images from ``folder``.

    Iterating again starts over (TensorRT may calibrate more than once). ``max_batches`` bounds
    the calibration time; images beyond it are not read.
    """

    folder: Path
    batch_size: int
    shape_hw: tuple[int, int]
    max_batches: int | None = None
    files: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if min(self.shape_hw) < 1:
            raise ValueError(f"shape_hw must be positive, got {self.shape_hw}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {self.max_batches}")
        found = list_images(self.folder)
        if len(found) < self.batch_size:
            raise CalibrationError(
                f"calibration folder {self.folder} has {len(found)} image(s), fewer than one batch of {self.batch_size}"
            )
        count = len(found) // self.batch_size
        if self.max_batches is not None:
            count = min(count, self.max_batches)
        self.files = found[: count * self.batch_size]

    @property
    def num_batches(self) -> int:
        return len(self.files) // self.batch_size

    @property
    def batch_shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, *self.shape_hw, 3)

    @property
    def batch_nbytes(self) -> int:
        return int(np.prod(self.batch_shape))

    def fingerprint(self) -> str:
        """Digest of the images used (names, sizes, modification times) and the batch geometry:
        part of the engine cache key, so new calibration data rebuilds an INT8 engine."""
        digest = hashlib.sha256(repr(self.batch_shape).encode())
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.files), self.batch_size):
            batch = np.empty(self.batch_shape, np.uint8)
            for i, path in enumerate(self.files[start : start + self.batch_size]):
                batch[i] = letterbox(read_rgb(path), self.shape_hw)
            yield batch

    def __len__(self) -> int:
        return self.num_batches
