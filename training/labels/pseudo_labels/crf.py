"""Dense CRF refinement (Krähenbühl & Koltun) of Algorithm-1 labels with pydensecrf2.

Unary from the combined map: label scores ``[bg, M(1), ..., M(C)]`` with the background score
``2 * gamma1 - max_c M(c)`` where the saliency is at least ``gamma2`` and 1 elsewhere. Their argmax is
exactly Algorithm 1's decision (``bg`` wins iff ``max M < gamma1`` or ``S < gamma2``), and the
confidence grows with the distance from the ``gamma1`` threshold on both sides (a constant background
score would make every "clearly empty" pixel as unsure as a borderline one). So the CRF starts from
Algorithm 1 and only moves labels where the pairwise terms (a Gaussian smoothness kernel and a
bilateral appearance kernel: similar colour nearby -> same label) outweigh that confidence.
Scores become probabilities with a softmax at ``temperature``: lower = trust the maps more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from training.config_schema import reject_unknown_keys
from training.labels.pseudo_labels.algorithm1 import BACKGROUND, Algorithm1Config, combined_map


@dataclass(frozen=True)
class CRFConfig:
    """Dense CRF parameters (pixel units at the resolution the CRF runs at)."""

    iterations: int = 5
    temperature: float = 0.1
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"crf.iterations: expected an integer >= 0, got {self.iterations!r}")
        for f in fields(self):
            if f.name == "iterations":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or value < 0 or (f.name.endswith(("sxy", "srgb")) and value == 0):
                raise ValueError(f"crf.{f.name}: expected a number >= 0 (> 0 for kernel widths), got {value!r}")
        if self.temperature <= 0:
            raise ValueError(f"crf.temperature: expected > 0, got {self.temperature!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "crf") -> CRFConfig:
        names = {f.name for f in fields(cls)}
        reject_unknown_keys(where, data, sorted(names))
        return cls(**dict(data))


def crf_unary_probabilities(
    cams: np.ndarray, saliency: np.ndarray, algo: Algorithm1Config, temperature: float
) -> np.ndarray:
    """``(C + 1) x H x W`` float32 probabilities, row 0 = background (see the module docstring)."""
    m = combined_map(cams, saliency)
    best = m.max(0) if m.shape[0] else np.zeros(saliency.shape, np.float32)
    bg = np.where(saliency >= algo.gamma2, 2.0 * algo.gamma1 - best, 1.0).astype(np.float32)
    scores = np.concatenate([bg[None], m], axis=0) / temperature
    scores -= scores.max(0, keepdims=True)
    p = np.exp(scores)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def crf_refine(
    image: np.ndarray,
    cams: np.ndarray,
    saliency: np.ndarray,
    algo: Algorithm1Config | None = None,
    config: CRFConfig | None = None,
) -> np.ndarray:
    """int32 ``H x W`` labels (class index or :data:`BACKGROUND`) after mean-field inference."""
    algo = algo or Algorithm1Config()
    config = config or CRFConfig()
    import pydensecrf.densecrf as dcrf  # compiled extension: import only when the CRF is used

    h, w = saliency.shape
    if image.shape[:2] != (h, w) or cams.shape[1:] != (h, w):
        raise ValueError(f"crf_refine: image {image.shape}, cams {cams.shape}, saliency {saliency.shape} disagree")
    n = cams.shape[0] + 1
    probs = crf_unary_probabilities(cams, saliency, algo, config.temperature)
    if cams.shape[0] == 0 or config.iterations == 0:
        return probs.argmax(0).astype(np.int32) - 1
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(n, -1)
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, np.float32))
    crf.addPairwiseGaussian(sxy=config.gaussian_sxy, compat=config.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=config.bilateral_sxy,
        srgb=config.bilateral_srgb,
        rgbim=np.ascontiguousarray(image[..., :3], np.uint8),
        compat=config.bilateral_compat,
    )
    q = np.asarray(crf.inference(config.iterations)).reshape(n, h, w)
    labels = q.argmax(0).astype(np.int32) - 1
    assert BACKGROUND == -1
    return labels
