"""Scores of the node's ``~/traffic_signs`` against a drive's sign ground truth, per class and overall.

A detection *matches* a true sign when their boxes overlap with IoU >= :data:`BOX_IOU` (0.5), by
location alone: one-to-one, greedily, most confident detection first
(:func:`training.evaluation.sign_instances.match_signs`, the sign evaluation's matcher). Then

- precision = matched detections / detections, recall = matched true signs / true signs;
- class accuracy = matched true signs whose detection names their class / matched true signs.

So "not found" (recall) and "found but misnamed" (class accuracy) read apart. Per class, the true
signs of a class give its recall and class accuracy, the detections naming it its precision. The
subset ``at_least_24px`` counts the true signs whose box has a longer side of at least
:data:`MIN_SIDE` px; a smaller true sign and the detection matched to it are ignored there, and an
unmatched detection counts only when its own box is that large (the size-range convention of
:mod:`training.evaluation.sign_instances`). Undefined scores (nothing to divide by) are None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hiseg_ros.outputs import SignDetection
from training.evaluation.sign_instances import BOX_IOU, SignBox, match_signs

MIN_SIDE = 24
SUBSETS = ("all", f"at_least_{MIN_SIDE}px")
SIGN_RULE = ("sign_split", "min_sign_area")  # the node parameters that decide what a detection is


def _box(sign: SignDetection) -> SignBox:
    return SignBox(sign.x, sign.y, sign.x + sign.width - 1, sign.y + sign.height - 1, 0, float(sign.score))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class SignCounts:
    """Counts of one class (or all) in one subset."""

    truth: int = 0
    detections: int = 0
    matched_truth: int = 0
    matched_detections: int = 0
    right_class: int = 0  # matched true signs whose detection names their class

    @property
    def precision(self) -> float | None:
        return _ratio(self.matched_detections, self.detections)

    @property
    def recall(self) -> float | None:
        return _ratio(self.matched_truth, self.truth)

    @property
    def class_accuracy(self) -> float | None:
        return _ratio(self.right_class, self.matched_truth)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out.update(precision=self.precision, recall=self.recall, class_accuracy=self.class_accuracy)
        return out


@dataclass
class SubsetScores:
    overall: SignCounts = field(default_factory=SignCounts)
    classes: dict[str, SignCounts] = field(default_factory=dict)

    def of(self, name: str) -> SignCounts:
        return self.classes.setdefault(name, SignCounts())

    def to_json(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_json(),
            "classes": {name: self.classes[name].to_json() for name in sorted(self.classes)},
        }


@dataclass
class SignScoring:
    """Accumulates frames (:meth:`add`); :meth:`to_json` is the ``signs`` object of metrics.json."""

    rule: dict[str, Any] = field(default_factory=dict)  # the node parameters of SIGN_RULE the detections came from
    frames: int = 0
    subsets: dict[str, SubsetScores] = field(default_factory=lambda: {s: SubsetScores() for s in SUBSETS})

    def add(self, truth: Sequence[SignDetection], detections: Sequence[SignDetection]) -> SignScoring:
        """One frame's true signs and detections (class = ``class_name``); returns ``self``."""
        self.frames += 1
        true_boxes, det_boxes = [_box(t) for t in truth], [_box(d) for d in detections]
        found = match_signs(true_boxes, det_boxes, same_class=False, iou=BOX_IOU)
        by_truth = {j: i for i, j in enumerate(found) if j is not None}
        for subset, min_side in zip(SUBSETS, (0, MIN_SIDE), strict=True):
            scores = self.subsets[subset]
            for j, sign in enumerate(truth):
                if true_boxes[j].longer_side < min_side:
                    continue
                right = j in by_truth and detections[by_truth[j]].class_name == sign.class_name
                for counts in (scores.overall, scores.of(sign.class_name)):
                    counts.truth += 1
                    counts.matched_truth += j in by_truth
                    counts.right_class += right
            for i, det in enumerate(detections):
                j = found[i]
                if (true_boxes[j].longer_side if j is not None else det_boxes[i].longer_side) < min_side:
                    continue
                for counts in (scores.overall, scores.of(det.class_name)):
                    counts.detections += 1
                    counts.matched_detections += j is not None
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "box_iou": BOX_IOU,
            "min_side": MIN_SIDE,
            "rule": dict(self.rule),
            "frames": self.frames,
            **{name: self.subsets[name].to_json() for name in SUBSETS},
        }
