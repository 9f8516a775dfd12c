"""training.evaluation.bags.sign_scores: the node's sign detections against the drive's true signs,
checked on hand-built boxes with hand-computed counts."""

from __future__ import annotations

import pytest

from hiseg_ros.outputs import SignDetection
from training.evaluation.bags.sign_scores import SignScoring


def sign(x0: int, y0: int, x1: int, y1: int, name: str, score: float = 1.0) -> SignDetection:
    w, h = x1 - x0 + 1, y1 - y0 + 1
    return SignDetection(x0, y0, w, h, w * h, 0, name, score)


TRUTH = [
    sign(0, 0, 29, 29, "stop"),  # A, 30 px
    sign(100, 0, 119, 19, "give-way"),  # B, 20 px: below 24
    sign(200, 0, 239, 39, "stop"),  # C, 40 px
]
DETECTIONS = [
    sign(0, 0, 29, 29, "stop", 0.9),  # on A, right class
    sign(100, 0, 119, 19, "stop", 0.8),  # on B, wrong class
    sign(300, 0, 329, 29, "stop", 0.7),  # on nothing, 30 px
    sign(400, 0, 409, 9, "give-way", 0.6),  # on nothing, 10 px
    sign(200, 0, 239, 18, "stop", 0.5),  # on C at IoU 760 / 1600 = 0.475: no match
]


def counts(entry: dict) -> tuple:
    return tuple(entry[k] for k in ("truth", "detections", "matched_truth", "matched_detections", "right_class"))


def test_counts_and_scores_by_hand():
    got = SignScoring().add(TRUTH, DETECTIONS).to_json()
    assert (got["box_iou"], got["min_side"], got["frames"]) == (0.5, 24, 1)
    every = got["all"]
    assert counts(every["overall"]) == (3, 5, 2, 2, 1)
    assert every["overall"]["precision"] == pytest.approx(2 / 5)
    assert every["overall"]["recall"] == pytest.approx(2 / 3)
    assert every["overall"]["class_accuracy"] == pytest.approx(1 / 2)
    assert counts(every["classes"]["stop"]) == (2, 4, 1, 2, 1)  # truth A, C; detections on A, B, nothing x2
    assert (every["classes"]["stop"]["precision"], every["classes"]["stop"]["recall"]) == (0.5, 0.5)
    assert every["classes"]["stop"]["class_accuracy"] == 1.0
    assert counts(every["classes"]["give-way"]) == (1, 1, 1, 0, 0)
    assert (every["classes"]["give-way"]["precision"], every["classes"]["give-way"]["recall"]) == (0.0, 1.0)
    assert every["classes"]["give-way"]["class_accuracy"] == 0.0
    # >= 24 px: B and the detection on it are ignored, the 10 px unmatched detection too
    large = got["at_least_24px"]
    assert counts(large["overall"]) == (2, 3, 1, 1, 1)
    assert large["overall"]["precision"] == pytest.approx(1 / 3)
    assert (large["overall"]["recall"], large["overall"]["class_accuracy"]) == (0.5, 1.0)
    assert set(large["classes"]) == {"stop"}  # a class with neither truth nor detections is not listed


def test_matching_is_one_to_one_most_confident_first_and_iou_half_matches():
    truth = [sign(0, 0, 39, 39, "stop")]
    half = sign(0, 0, 39, 19, "stop", 0.4)  # IoU exactly 800 / 1600 = 0.5: matches
    twin = sign(0, 0, 39, 39, "give-way", 0.9)  # more confident: takes the sign first
    got = SignScoring().add(truth, [half, twin]).to_json()["all"]["overall"]
    assert counts(got) == (1, 2, 1, 1, 0)  # found, by the misnaming twin; the other is a false positive
    alone = SignScoring().add(truth, [half]).to_json()["all"]["overall"]
    assert counts(alone) == (1, 1, 1, 1, 1)


def test_perfect_detections_score_one_and_nothing_is_undefined():
    perfect = SignScoring().add(TRUTH, [sign(s.x, s.y, s.x + s.width - 1, s.y + s.height - 1, s.class_name)
                                        for s in TRUTH])  # fmt: skip
    for subset in ("all", "at_least_24px"):
        overall = perfect.to_json()[subset]["overall"]
        assert (overall["precision"], overall["recall"], overall["class_accuracy"]) == (1.0, 1.0, 1.0)
    empty = SignScoring().add([], []).to_json()["all"]["overall"]
    assert (empty["precision"], empty["recall"], empty["class_accuracy"]) == (None, None, None)
