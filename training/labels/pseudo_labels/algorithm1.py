"""Algorithm 1 of Xu et al.: attention maps + class-agnostic saliency -> hard pseudo labels.

``M(c) = (A_c + S) / 2``; a pixel is background where ``max_c M(c) < gamma1`` or ``S < gamma2``,
else it takes ``argmax_c M(c)``. Attention says *which* class, saliency says *where the object ends*;
averaging them needs both to agree, and the ``S < gamma2`` rule lets saliency veto attention that
leaked onto the road. Background is encoded as ``-1``, class ``c`` as its index in the maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config_schema import reject_unknown_keys

BACKGROUND = -1


@dataclass(frozen=True)
class Algorithm1Config:
    """Thresholds of Algorithm 1 (paper values 0.2 / 0.06)."""

    gamma1: float = 0.2
    gamma2: float = 0.06

    def __post_init__(self) -> None:
        for key in ("gamma1", "gamma2"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"algorithm1.{key}: expected a number in [0, 1], got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "algorithm1") -> Algorithm1Config:
        reject_unknown_keys(where, data, ("gamma1", "gamma2"))
        return cls(**dict(data))


def combined_map(cams: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """``M = (A + S) / 2`` for ``C x H x W`` attention and ``H x W`` saliency (both in [0, 1])."""
    return (np.asarray(cams, np.float32) + np.asarray(saliency, np.float32)[None]) * 0.5


def algorithm1(cams: np.ndarray, saliency: np.ndarray, config: Algorithm1Config = Algorithm1Config()) -> np.ndarray:
    """int32 ``H x W`` labels: class index, or :data:`BACKGROUND`."""
    cams = np.asarray(cams, np.float32)
    saliency = np.asarray(saliency, np.float32)
    if cams.ndim != 3 or cams.shape[1:] != saliency.shape:
        raise ValueError(f"algorithm1: cams {cams.shape} must be C x H x W with saliency H x W {saliency.shape}")
    if cams.shape[0] == 0:
        return np.full(saliency.shape, BACKGROUND, np.int32)
    m = combined_map(cams, saliency)
    labels = m.argmax(0).astype(np.int32)
    labels[(m.max(0) < config.gamma1) | (saliency < config.gamma2)] = BACKGROUND
    return labels


def cam_only_labels(cams: np.ndarray, threshold: float) -> np.ndarray:
    """The "CAM only" ablation: argmax of the attention maps, background where the best is below ``threshold``."""
    cams = np.asarray(cams, np.float32)
    if cams.shape[0] == 0:
        return np.full(cams.shape[1:], BACKGROUND, np.int32)
    labels = cams.argmax(0).astype(np.int32)
    labels[cams.max(0) < threshold] = BACKGROUND
    return labels
