"""Per-instance traffic-sign scores: the node's sign instances matched one-to-one to the true signs.

A sign is found when a detection's box overlaps the true box with IoU >= :data:`BOX_IOU` (0.5) and
names the right GTSDB class. Detections are matched greedily, most confident first (the node's
``score``, then the larger region), each to the unmatched true sign of the right class with the
highest box IoU. A detection at the right place with the wrong class is therefore both a false
positive and a miss (a false negative of the true sign): for class accuracy it counts as a miss.
The same matching without the class condition (``location``) says how many signs were found at
all, which separates "not detected" from "detected but misnamed". A detection that finds no true sign but
overlaps (IoU >= 0.5, any class) a sign the truth leaves unboxed (``ignored``: a visible front sign
outside the range gt.txt annotates) is ignored, neither right nor wrong, since the image does show
a sign there.

Sizes, as the GTSDB benchmark gives its sign sizes: the longer side of the box in pixels (inclusive
bounds, so a box covering columns 10..25 is 16 px wide). Scores are reported for all signs and for
the signs whose true box has a longer side of at least :data:`MIN_SIDE` (16) px. In that subset a
true sign below 16 px is *ignored*, not a miss, and so is a detection matched to it; an unmatched
detection counts as a false positive only if its own box has a longer side of at least 16 px (the
COCO convention for size ranges, which keeps a 15 px detection of a 16 px sign from being a miss and
a 17 px detection of a 15 px sign from being a false positive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hiseg_ros.hierarchy import IGNORE
from hiseg_ros.outputs import SignDetection

__all__ = [
    "BOX_IOU",
    "CRITERIA",
    "MIN_SIDE",
    "SUBSETS",
    "DetectionCounts",
    "DetectionScores",
    "SignBox",
    "box_iou",
    "match_signs",
]

BOX_IOU = 0.5
MIN_SIDE = 16
SUBSETS = ("all", f"at_least_{MIN_SIDE}px")
CRITERIA = ("class", "location")  # IoU >= 0.5 and the right class / IoU >= 0.5 whatever the class


@dataclass(frozen=True)
class SignBox:
    """A sign's box in pixels, inclusive bounds; ``gtsdb_class`` is IGNORE for a detection whose leaf
    has no GTSDB class. ``score`` orders the detections for matching (1.0 for true signs)."""

    x0: int
    y0: int
    x1: int
    y1: int
    gtsdb_class: int
    score: float = 1.0

    @property
    def longer_side(self) -> int:
        return max(self.x1 - self.x0 + 1, self.y1 - self.y0 + 1)

    @property
    def area(self) -> int:
        return (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)

    @classmethod
    def from_detection(cls, det: SignDetection, native_of_leaf: np.ndarray) -> SignBox:
        """The node's :class:`~hiseg_ros.outputs.SignDetection` with its leaf mapped to a GTSDB class."""
        native = int(native_of_leaf[det.leaf_id]) if det.leaf_id < len(native_of_leaf) else IGNORE
        return cls(det.x, det.y, det.x + det.width - 1, det.y + det.height - 1, native, det.score)


def box_iou(a: SignBox, b: SignBox) -> float:
    """Intersection over union of two boxes, counted in pixels (inclusive bounds)."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0) + 1
    ih = min(a.y1, b.y1) - max(a.y0, b.y0) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.area + b.area - inter)


def match_signs(
    truth: Sequence[SignBox], detections: Sequence[SignBox], same_class: bool, iou: float = BOX_IOU
) -> list[int | None]:
    """Per detection (in the given order): the index of the true sign it found, or None.

    Greedy one-to-one matching, detections by descending score (ties: larger box first, then the
    given order); ``same_class`` requires the detection's class to equal the true sign's.
    """
    order = sorted(range(len(detections)), key=lambda i: (-detections[i].score, -detections[i].area, i))
    taken = [False] * len(truth)
    found: list[int | None] = [None] * len(detections)
    for i in order:
        det = detections[i]
        best, best_iou = None, iou
        for j, true_sign in enumerate(truth):
            if taken[j] or (same_class and det.gtsdb_class != true_sign.gtsdb_class):
                continue
            overlap = box_iou(det, true_sign)
            if overlap >= best_iou and (best is None or overlap > best_iou):
                best, best_iou = j, overlap
        if best is not None:
            taken[best] = True
            found[i] = best
    return found


@dataclass
class DetectionCounts:
    """True positives (found signs), false positives (detections that found none), false negatives."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        """TP / detections; NaN without detections."""
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else math.nan

    @property
    def recall(self) -> float:
        """TP / true signs; NaN without true signs."""
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else math.nan

    def __iadd__(self, other: DetectionCounts) -> DetectionCounts:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives
        return self


def _counts(
    truth: Sequence[SignBox],
    detections: Sequence[SignBox],
    found: Sequence[int | None],
    ignored: Sequence[bool],
    min_side: int,
) -> DetectionCounts:
    """Counts over the true signs of at least ``min_side`` px (see the module docstring)."""
    counted = [t.longer_side >= min_side for t in truth]
    tp = sum(1 for j in found if j is not None and counted[j])
    fp = sum(
        1
        for det, j, skip in zip(detections, found, ignored, strict=True)
        if j is None and not skip and det.longer_side >= min_side
    )
    return DetectionCounts(tp, fp, sum(counted) - tp)


@dataclass
class DetectionScores:
    """Counts per (criterion, subset): criteria :data:`CRITERIA`, subsets :data:`SUBSETS`."""

    counts: dict[tuple[str, str], DetectionCounts] = field(
        default_factory=lambda: {(c, s): DetectionCounts() for c in CRITERIA for s in SUBSETS}
    )

    def add(
        self, truth: Sequence[SignBox], detections: Sequence[SignBox], ignored: Sequence[SignBox] = ()
    ) -> DetectionScores:
        """Match and count one image's detections; ``ignored``: its unboxed signs. Returns ``self``."""
        on_ignored = [any(box_iou(det, sign) >= BOX_IOU for sign in ignored) for det in detections]
        for criterion in CRITERIA:
            found = match_signs(truth, detections, same_class=criterion == "class")
            for subset, min_side in zip(SUBSETS, (0, MIN_SIDE), strict=True):
                self.counts[criterion, subset] += _counts(truth, detections, found, on_ignored, min_side)
        return self
