"""Iterative erasing of salient regions (Xu et al.): make a saliency map cover whole objects.

Saliency detectors fire on the most distinctive part of a scene and miss the rest. Xu et al. erase
what was found (pixels with saliency above 0.7, then above 0.8 in the next round), replace them with
the image's mean pixel so they no longer stand out, run the detector again on the erased image, and
keep the pixel-wise maximum of all maps: objects found in any round survive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config_schema import reject_unknown_keys

SaliencyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ErasingConfig:
    """``thresholds[i]``: pixels of map ``i`` above it are erased before map ``i + 1`` (0.7, 0.8)."""

    thresholds: tuple[float, ...] = (0.7, 0.8)

    def __post_init__(self) -> None:
        for t in self.thresholds:
            if not 0.0 <= float(t) <= 1.0:
                raise ValueError(f"erasing.thresholds: every threshold must lie in [0, 1], got {list(self.thresholds)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "erasing") -> ErasingConfig:
        reject_unknown_keys(where, data, ("thresholds",))
        raw = data.get("thresholds", cls.thresholds)
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise ValueError(f"{where}.thresholds: expected a list of numbers, got {raw!r}")
        return cls(tuple(float(t) for t in raw))


def iterative_saliency(
    image: np.ndarray, saliency: SaliencyFn, config: ErasingConfig = ErasingConfig()
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(final map = pixel-wise max of all rounds, the per-round maps) for an RGB uint8 image.

    Erasure accumulates: round ``i + 1`` sees every pixel erased so far replaced by the mean pixel
    of the original image (one colour per image, as in the paper).
    """
    mean_pixel = image.reshape(-1, image.shape[-1]).mean(0).round().astype(image.dtype)
    current = image.copy()
    maps = [np.asarray(saliency(current), np.float32)]
    for threshold in config.thresholds:
        current[maps[-1] > threshold] = mean_pixel
        maps.append(np.asarray(saliency(current), np.float32))
    return np.maximum.reduce(maps), maps
