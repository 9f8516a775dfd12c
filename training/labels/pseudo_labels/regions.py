"""Classes per region instead of per pixel, from coarse maps.

Grad-CAM maps are 18x24 and the learned foreground map 12x16 before upsampling, so per-pixel
decisions follow blurry blobs, and where two classes' blobs overlap the argmax splits one object
between them (most pixels go to the class with the broadest map). Deciding once per region lets the
image, not the map grid, say where a class ends. Four ways (``mode``):

* ``maps``: every attention map and the saliency map are replaced by their mean over each
  superpixel *before* Algorithm 1 (and the CRF): a superpixel is labelled as a whole;
* ``vote``: the finished labels (after Algorithm 1 / the CRF) are replaced by each superpixel's
  most frequent label (background counts as a label);
* ``components``: foreground / background stay as Algorithm 1 / the CRF decided, but every
  connected foreground region (8-connected) takes the one class whose attention is highest on
  average over it: a whole salient object gets one class. Objects that touch share one class, and
  with a saliency map that fires on background structure (the OpenCV detectors) one region covers
  most of the image: measured far worse there (docs/RESULTS_WEAK_LABELS.md), so not the default.
* ``diffusion``: class-identity diffusion as in L-Net (a random walk over the superpixel graph):
  each superpixel starts with its mean attention per class, which then spreads to adjacent
  superpixels with a weight that falls with their difference in CIELAB colour and in foreground
  (saliency) value, ``s <- alpha * P s + (1 - alpha) * s0`` for ``steps`` steps (``P``: the
  row-normalised affinities). A class seen on part of an object reaches the rest of it through
  similar neighbours, and stops at colour and foreground edges. The diffused maps then go to
  Algorithm 1 / the CRF like ``maps``.

Superpixels: SLICO (the parameter-free SLIC variant, OpenCV ximgproc) on the CIELAB image at the
pipeline's work size; ``region_size`` is the average superpixel side in pixels there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from training.config_schema import reject_unknown_keys
from training.labels.pseudo_labels.stages import REGION_MODES

RegionMode = Literal["maps", "vote", "components", "diffusion"]
DIFFUSION_KEYS = ("alpha", "steps", "sigma_color", "sigma_foreground")


@dataclass(frozen=True)
class RegionConfig:
    """Region settings; the superpixel ones (pixels at the pipeline's work size) are unused by ``components``."""

    mode: RegionMode = "maps"
    region_size: int = 12
    ruler: float = 10.0
    iterations: int = 10
    min_size_percent: int = 25  # merge superpixels smaller than this % of region_size^2 into a neighbour
    alpha: float = 0.9  # diffusion: share of each step that comes from the neighbours (0: no diffusion)
    steps: int = 20
    sigma_color: float = 8.0  # CIELAB distance (OpenCV's 8-bit L*a*b* units) at which affinity falls to e^-1/2
    sigma_foreground: float = 0.15  # the same for the saliency difference (0..1)

    def __post_init__(self) -> None:
        if self.mode not in REGION_MODES:
            raise ValueError(f"regions.mode: expected one of {list(REGION_MODES)}, got {self.mode!r}")
        for key in ("region_size", "iterations", "min_size_percent"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "min_size_percent" else 1):
                raise ValueError(f"regions.{key}: expected a positive integer, got {value!r}")
        if not isinstance(self.ruler, int | float) or self.ruler <= 0:
            raise ValueError(f"regions.ruler: expected a number > 0, got {self.ruler!r}")
        if not isinstance(self.alpha, int | float) or not 0 <= self.alpha < 1:
            raise ValueError(f"regions.alpha: expected a number in [0, 1), got {self.alpha!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"regions.steps: expected a positive integer, got {self.steps!r}")
        for key in ("sigma_color", "sigma_foreground"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"regions.{key}: expected a number > 0, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "regions") -> RegionConfig:
        keys = ("mode", "region_size", "ruler", "iterations", "min_size_percent", *DIFFUSION_KEYS)
        reject_unknown_keys(where, data, keys)
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The settings that shape the labels (a label folder's fingerprint): the diffusion ones only
        in ``diffusion`` mode, so folders made before it existed keep their fingerprint."""
        out = {
            "mode": self.mode,
            "region_size": self.region_size,
            "ruler": self.ruler,
            "iterations": self.iterations,
            "min_size_percent": self.min_size_percent,
        }
        if self.mode == "diffusion":
            out.update({key: getattr(self, key) for key in DIFFUSION_KEYS})
        return out


def superpixels(image: np.ndarray, config: RegionConfig = RegionConfig()) -> np.ndarray:
    """int32 ``H x W`` region ids ``0..K-1`` of an RGB uint8 image (SLICO on CIELAB, connected regions)."""
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f"superpixels: expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    lab = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2LAB)
    slic = cv2.ximgproc.createSuperpixelSLIC(
        lab, algorithm=cv2.ximgproc.SLICO, region_size=config.region_size, ruler=float(config.ruler)
    )
    slic.iterate(config.iterations)
    if config.min_size_percent > 0:
        slic.enforceLabelConnectivity(config.min_size_percent)
    labels = slic.getLabels().astype(np.int64)
    _, dense = np.unique(labels, return_inverse=True)  # ids without gaps after the merging
    return dense.reshape(labels.shape).astype(np.int32)


def _region_means(stack: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """``K x C`` float64: the mean of each of the ``C x H x W`` maps over each of the ``K`` regions."""
    flat = regions.ravel().astype(np.int64)
    k = int(flat.max()) + 1 if flat.size else 0
    count = np.maximum(np.bincount(flat, minlength=k), 1).astype(np.float64)
    sums = [np.bincount(flat, weights=m.ravel().astype(np.float64), minlength=k) for m in stack]
    return np.stack(sums, 1) / count[:, None] if sums else np.zeros((k, 0))


def region_mean(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Each map (``H x W`` or ``C x H x W``) replaced by its mean over every region, same shape, float32."""
    maps = np.asarray(maps, np.float32)
    squeeze = maps.ndim == 2
    stack = maps[None] if squeeze else maps
    if stack.shape[1:] != regions.shape:
        raise ValueError(f"region_mean: maps {maps.shape} and regions {regions.shape} disagree")
    out = _region_means(stack, regions)[regions].transpose(2, 0, 1).astype(np.float32)
    return out[0] if squeeze else out


def region_vote(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """int32 labels (class index or -1 background) replaced by each region's most frequent label.

    Ties go to the smaller label (background first), i.e. towards not labelling.
    """
    labels = np.asarray(labels)
    if labels.shape != regions.shape:
        raise ValueError(f"region_vote: labels {labels.shape} and regions {regions.shape} disagree")
    shifted = labels.astype(np.int64).ravel() + 1  # background -1 -> 0
    n_labels = int(shifted.max()) + 1 if shifted.size else 1
    n_regions = int(regions.max()) + 1 if regions.size else 0
    votes = np.bincount(regions.ravel().astype(np.int64) * n_labels + shifted, minlength=n_regions * n_labels)
    winner = votes.reshape(n_regions, n_labels).argmax(1) - 1
    return winner[regions].astype(np.int32)


def component_classes(labels: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """int32 labels whose every 8-connected foreground region has the class of highest mean attention there.

    ``labels``: class index or -1 (background), ``cams``: ``C x H x W`` attention of those classes.
    """
    labels = np.asarray(labels)
    cams = np.asarray(cams, np.float32)
    if cams.ndim != 3 or cams.shape[1:] != labels.shape:
        raise ValueError(f"component_classes: cams {cams.shape} must be C x H x W with labels {labels.shape}")
    foreground = labels >= 0
    if cams.shape[0] == 0 or not foreground.any():
        return labels.astype(np.int32)
    n, components = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    flat = components.ravel()
    count = np.maximum(np.bincount(flat, minlength=n), 1)
    means = np.stack([np.bincount(flat, weights=c.ravel().astype(np.float64), minlength=n) for c in cams]) / count
    best = means.argmax(0).astype(np.int32)  # component 0 is the background; masked below
    return np.where(foreground, best[components], -1).astype(np.int32)


def region_edges(regions: np.ndarray) -> np.ndarray:
    """``E x 2`` int64 pairs ``(i, j)``, ``i < j``, of regions that touch (4-neighbourhood), each once."""
    regions = np.asarray(regions, np.int64)
    pairs = [
        np.stack([regions[:, :-1].ravel(), regions[:, 1:].ravel()], 1),
        np.stack([regions[:-1, :].ravel(), regions[1:, :].ravel()], 1),
    ]
    edges = np.concatenate(pairs)
    edges = edges[edges[:, 0] != edges[:, 1]]
    return np.unique(np.sort(edges, axis=1), axis=0) if edges.size else np.zeros((0, 2), np.int64)


def diffuse_classes(
    image: np.ndarray,
    maps: np.ndarray,
    regions: np.ndarray,
    foreground: np.ndarray | None = None,
    config: RegionConfig = RegionConfig(mode="diffusion"),
) -> np.ndarray:
    """``C x H x W`` attention diffused over the superpixel graph (module docstring, ``diffusion``).

    ``image``: the RGB uint8 image the ``regions`` were cut from; ``foreground``: the saliency map
    (``H x W`` in 0..1), or None to compare colours only. Values stay in the range of the input
    maps (every step is a convex combination), so Algorithm 1's thresholds keep their meaning.
    """
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3 or maps.shape[1:] != regions.shape or image.shape[:2] != regions.shape:
        shapes = f"maps {maps.shape}, image {image.shape} and regions {regions.shape}"
        raise ValueError(f"diffuse_classes: {shapes} disagree")
    if maps.shape[0] == 0 or regions.size == 0:
        return maps.copy()
    k = int(regions.max()) + 1
    lab = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2LAB)
    features = _region_means(np.moveaxis(lab.astype(np.float64), -1, 0), regions) / config.sigma_color
    if foreground is not None:
        fg = np.asarray(foreground, np.float64)[None] / config.sigma_foreground
        features = np.concatenate([features, _region_means(fg, regions)], 1)
    seeds = _region_means(maps, regions)  # K x C
    edges = region_edges(regions)
    if edges.shape[0] == 0 or config.alpha == 0:
        return seeds[regions].transpose(2, 0, 1).astype(np.float32)
    weight = np.exp(-0.5 * ((features[edges[:, 0]] - features[edges[:, 1]]) ** 2).sum(1))
    src = np.concatenate([edges[:, 0], edges[:, 1]])  # both directions of every edge
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    w = np.concatenate([weight, weight])
    degree = np.bincount(src, weights=w, minlength=k)
    p = w / np.maximum(degree[src], 1e-12)  # row-normalised: P[src, dst]
    isolated = degree <= 1e-12  # no similar neighbour: keeps its own value
    scores = seeds.copy()
    for _ in range(config.steps):
        spread = np.stack([np.bincount(src, weights=p * column, minlength=k) for column in scores[dst].T], 1)
        spread[isolated] = scores[isolated]
        scores = config.alpha * spread + (1.0 - config.alpha) * seeds
    return scores[regions].transpose(2, 0, 1).astype(np.float32)
