"""Sign box sizes like the real GTSDB's: the distribution boxes are drawn from, and which are annotated.

The real benchmark (1360x800 images) annotates signs whose box is 16-128 px on its longer side,
median about 38 px, 10th percentile about 23 px. Sizes here are the box's longer side in pixels
at ``reference_width``; an image of another width scales them by ``width / reference_width``, so
a set written at a smaller scale keeps the same sizes relative to its images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_STD_NORMAL = NormalDist()


@dataclass(frozen=True)
class SignBoxes:
    """A log-normal over the box's longer side, truncated to the annotated range ``[low, high]``.

    ``median`` and ``p10`` set the log-normal before truncation; the truncation moves them by
    well under a pixel (16 px is 2.2 sigma below the median, 128 px 3.1 above).
    """

    median: float = 38.0
    p10: float = 23.0
    low: float = 16.0
    high: float = 128.0
    reference_width: int = 1360
    margin: float = 1.0  # targets stay this far inside [low, high]: rendering moves a box by a pixel

    def __post_init__(self) -> None:
        if not 0 < self.low + self.margin < self.p10 < self.median < self.high - self.margin:
            raise ValueError(f"SignBoxes: expected 0 < low < p10 < median < high, got {self}")

    @property
    def sigma(self) -> float:
        return math.log(self.median / self.p10) / -_STD_NORMAL.inv_cdf(0.1)

    def scale(self, width: int) -> float:
        return width / self.reference_width

    def sample(self, rng: np.random.Generator, width: int) -> float:
        """One box size (longer side, pixels) for an image ``width`` wide; inverse-CDF sampling."""
        mu, sigma = math.log(self.median), self.sigma
        lo = _STD_NORMAL.cdf((math.log(self.low + self.margin) - mu) / sigma)
        hi = _STD_NORMAL.cdf((math.log(self.high - self.margin) - mu) / sigma)
        z = _STD_NORMAL.inv_cdf(float(rng.uniform(lo, hi)))
        return math.exp(mu + sigma * z) * self.scale(width)

    def annotated(self, box_width: int, box_height: int, width: int) -> bool:
        """Whether the benchmark would box a sign whose visible extent is this large (in pixels)."""
        side = max(box_width, box_height)
        s = self.scale(width)
        return round(self.low * s) <= side <= round(self.high * s)


GTSDB_SIGN_BOXES = SignBoxes()
