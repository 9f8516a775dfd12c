"""Geometric and photometric augmentation: random scale, crop and flip, applied consistently.

One random *geometry* (an affine map from the source image to the crop) is drawn per sample
and applied to everything that lives in image coordinates: the image (bilinear), label and
target maps (nearest, padding with "ignore"), and boxes (coordinates). Drawing the geometry
once and warping each array with it keeps boxes, maps and pixels aligned whatever the order
in which the training pipeline turns labels into targets.

Randomness comes from an explicit ``numpy.random.Generator`` so that a sample's augmentation
is a pure function of (seed, rank, iteration, slot): a resumed run sees exactly the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np

from training.data.readers.base import Box, Sample


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; ``crop`` is (height, width) of the network input.

    Also the training config's ``augment`` section (parsed by :mod:`training.fit.config`): the
    checks below are its value checks, with the config key in the message.
    """

    crop: tuple[int, int] = (256, 512)
    scale: tuple[float, float] = (0.5, 1.5)  # relative to ``base_height / image height``
    base_height: int | None = None  # resize so the image is this tall before random scaling
    flip: bool = True
    brightness: float = 0.2  # +- fraction
    contrast: float = 0.2

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or min(self.crop) <= 0:
            raise ValueError(f"augment.crop: expected [height, width] > 0, got {list(self.crop)}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"augment.scale: expected [min, max] with 0 < min <= max, got {list(self.scale)}")
        for key in ("brightness", "contrast"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"augment.{key}: expected a fraction in [0, 1), got {getattr(self, key)}")


@dataclass(frozen=True)
class Geometry:
    """Affine map source pixel -> crop pixel (2x3), and the crop size (height, width)."""

    matrix: np.ndarray
    size: tuple[int, int]

    def warp_image(self, image: np.ndarray) -> np.ndarray:
        h, w = self.size
        return cv2.warpAffine(image, self.matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def warp_map(self, labels: np.ndarray, fill: int) -> np.ndarray:
        """Nearest-neighbour warp of a label / target map; pixels from outside the source get ``fill``."""
        h, w = self.size
        return cv2.warpAffine(
            labels, self.matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        )

    @property
    def flipped(self) -> bool:
        """Whether the crop is a mirror image of the source (the map has no rotation)."""
        return bool(self.matrix[0, 0] < 0)

    def mirror_labels(self, sample: Sample, mirror_classes: Mapping[int, int]) -> Sample:
        """``sample`` with the native labels its mirror image shows, if this geometry flips; else ``sample``.

        ``mirror_classes`` (a reader's, e.g. GTSDB keep right <-> keep left) swaps box labels and
        label-map ids; the pixels themselves are mirrored later by the warps. Apply it before the
        labels become targets, since the swap is between native classes.
        """
        if not self.flipped or not mirror_classes:
            return sample
        boxes = tuple(
            replace(b, label=mirror_classes.get(b.label, b.label)) if isinstance(b.label, int) else b
            for b in sample.boxes
        )
        label = sample.label
        if label is not None:
            lut = np.arange(max(int(label.max(initial=0)), *mirror_classes) + 1).astype(label.dtype)
            lut[list(mirror_classes)] = list(mirror_classes.values())
            label = lut[label]
        return replace(sample, boxes=boxes, label=label)

    def warp_boxes(self, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
        """Transform inclusive pixel boxes; boxes that fall outside the crop are dropped, others clipped."""
        out = []
        h, w = self.size
        m = self.matrix
        for box in boxes:
            # cv2 samples at pixel centres: source pixels x0..x1 cover [x0 - 0.5, x1 + 0.5].
            xs = np.array([box.x0 - 0.5, box.x1 + 0.5])
            ys = np.array([box.y0 - 0.5, box.y1 + 0.5])
            px = m[0, 0] * xs + m[0, 2]  # the matrix has no shear or rotation
            py = m[1, 1] * ys + m[1, 2]
            x0, x1 = sorted(px)
            y0, y1 = sorted(py)
            # Destination pixels whose centre falls inside the mapped interval.
            ix0, iy0 = max(0, int(np.ceil(x0 - 1e-9))), max(0, int(np.ceil(y0 - 1e-9)))
            ix1, iy1 = min(w - 1, int(np.ceil(x1 - 1e-9)) - 1), min(h - 1, int(np.ceil(y1 - 1e-9)) - 1)
            if ix1 >= ix0 and iy1 >= iy0:
                out.append(Box(ix0, iy0, ix1, iy1, box.label))
        return tuple(out)


def random_geometry(
    image_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator, flip: bool = True
) -> Geometry:
    """Draw scale, crop position and flip for one image of size ``image_hw``.

    A flip needs both ``cfg.flip`` (the switch for all datasets) and ``flip`` (the dataset's own,
    :attr:`DatasetReader.flip`: False for GTSDB unless its ``flip`` option asks, see the reader).
    """
    h, w = image_hw
    base = (cfg.base_height / h) if cfg.base_height else 1.0
    s = base * float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    ch, cw = cfg.crop
    sh, sw = h * s, w * s
    # Crop offset in the scaled image; a crop larger than the image is centred (borders reflect).
    ox = float(rng.uniform(0, sw - cw)) if sw > cw else (sw - cw) / 2
    oy = float(rng.uniform(0, sh - ch)) if sh > ch else (sh - ch) / 2
    flip = cfg.flip and flip and bool(rng.integers(0, 2))
    return scaled_crop(s, (ox, oy), flip, (ch, cw))


def scaled_crop(scale: float, offset: tuple[float, float], flip: bool, size: tuple[int, int]) -> Geometry:
    """The one crop map: scale the image by ``scale``, cut ``size`` (h, w) at ``offset`` (x, y) of the
    scaled image (pixel edges, as cv2.resize scales), mirror the crop if ``flip``.

    Every sampler draws its numbers and builds its geometry here (:func:`random_geometry`,
    :func:`placed_crop`, the box- and class-centred crops of :mod:`training.data.crops`).
    """
    s, (ox, oy), (ch, cw) = scale, offset, size
    # Work in edge coordinates (u = x + 0.5, as cv2.resize does) and convert back to the pixel
    # centres warpAffine maps, so scaling keeps image borders aligned and a flip is exact.
    tx = (cw + ox - 0.5 * s - 0.5) if flip else (0.5 * s - ox - 0.5)
    matrix = np.array([[-s if flip else s, 0.0, tx], [0.0, s, 0.5 * s - oy - 0.5]])
    return Geometry(matrix, (ch, cw))


def placed_crop(
    scale: float, source_xy: tuple[float, float], crop_xy: tuple[float, float], flip: bool, size: tuple[int, int]
) -> Geometry:
    """A :func:`scaled_crop` that puts source pixel ``source_xy`` at pixel ``crop_xy`` of the crop
    (of the unflipped crop: a flip moves it to ``width - 1 - x``); crops off the image pad as usual."""
    (sx, sy), (cx, cy) = source_xy, crop_xy
    return scaled_crop(scale, (scale * (sx + 0.5) - cx - 0.5, scale * (sy + 0.5) - cy - 0.5), flip, size)


def center_geometry(image_hw: tuple[int, int], size: tuple[int, int]) -> Geometry:
    """Deterministic resize to ``size`` (evaluation): no crop, no flip."""
    h, w = image_hw
    sy, sx = size[0] / h, size[1] / w
    return Geometry(np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]]), size)


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random brightness / contrast, so colour alone never identifies a class."""
    gain = 1.0 + float(rng.uniform(-cfg.contrast, cfg.contrast))
    bias = 255.0 * float(rng.uniform(-cfg.brightness, cfg.brightness))
    mean = float(image.mean())
    out = (image.astype(np.float32) - mean) * gain + mean + bias
    return np.clip(out, 0, 255).astype(np.uint8)
