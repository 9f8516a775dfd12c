"""Confusion matrix and scores on tiny hand-computed cases."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from training.evaluation.metrics import ConfusionMatrix, class_table, confusion_png, pct


def _hand_case() -> ConfusionMatrix:
    # gt class 2 never occurs; its only prediction is on an ignored pixel (not counted).
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 255, 255], dtype=np.uint8)
    pred = np.array([0, 0, 1, 255, 1, 1, 0, 2, 0], dtype=np.uint8)
    return ConfusionMatrix(3).update(gt, pred)


def test_matrix_counts_with_void_column():
    cm = _hand_case()
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0, 1], [1, 2, 0, 0], [0, 0, 0, 0]])
    assert cm.matrix.sum() == 7  # the two ignored pixels are not counted


def test_hand_computed_scores():
    s = _hand_case().scores()
    # class 0: TP 2, FP 1 (gt 1 -> 0), FN 2 (one -> 1, one void) ; class 1: TP 2, FP 1, FN 1
    assert s.iou[0] == pytest.approx(2 / 5)
    assert s.iou[1] == pytest.approx(2 / 4)
    assert math.isnan(s.iou[2]) and math.isnan(s.accuracy[2])
    assert s.accuracy[0] == pytest.approx(2 / 4)
    assert s.accuracy[1] == pytest.approx(2 / 3)
    assert s.miou == pytest.approx((2 / 5 + 2 / 4) / 2)  # class 2 (absent, never predicted) excluded
    assert s.macc == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert s.pixel_accuracy == pytest.approx(4 / 7)
    assert s.void_pixels == 1
    np.testing.assert_array_equal(s.gt_pixels, [4, 3, 0])
    np.testing.assert_array_equal(s.pred_pixels, [3, 3, 0])


def test_void_predictions_are_false_negatives_only():
    gt = np.array([[0, 0], [1, 1]])
    perfect = ConfusionMatrix(2).update(gt, gt).scores()
    assert perfect.miou == 1.0
    # 255 and any other out-of-range value (7) mean "no evaluated class"
    s = ConfusionMatrix(2).update(gt, np.array([[0, 255], [1, 7]])).scores()
    np.testing.assert_allclose(s.iou, [0.5, 0.5])  # TP 1, FN 1, FP 0 each: nobody gains an FP
    np.testing.assert_array_equal(s.pred_pixels, [1, 1])
    assert s.void_pixels == 2
    assert s.pixel_accuracy == 0.5


def test_class_only_predicted_counts_with_iou_zero():
    """The cityscapesscripts convention: absent from gt but predicted -> IoU 0, included in the mean."""
    s = ConfusionMatrix(3).update(np.array([0, 0]), np.array([0, 1])).scores()
    assert s.iou[0] == 0.5 and s.iou[1] == 0.0 and math.isnan(s.iou[2])
    assert s.miou == pytest.approx(0.25)
    assert math.isnan(s.accuracy[1])
    assert s.macc == 0.5  # accuracy is only defined for classes with gt pixels


def test_empty_matrix_gives_nan():
    s = ConfusionMatrix(2).scores()
    assert math.isnan(s.miou) and math.isnan(s.macc) and math.isnan(s.pixel_accuracy)
    assert json.dumps(s.to_dict(["a", "b"]), allow_nan=False)


def test_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (2, 13, 17)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, 7, gt.shape).astype(np.uint8)
    a = ConfusionMatrix(6).update(gt[0], pred[0])
    b = ConfusionMatrix(6).update(gt[1], pred[1])
    whole = ConfusionMatrix(6).update(gt, pred)
    np.testing.assert_array_equal((a + b).matrix, whole.matrix)
    a += b
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    assert a.scores().miou == whole.scores().miou


def test_invalid_inputs_are_errors():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"target values \[5\]"):
        ConfusionMatrix(2).update(np.array([0, 5]), np.array([0, 0]))
    with pytest.raises(ValueError, match="merge"):
        ConfusionMatrix(2) + ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2, matrix=np.zeros((2, 2)))


def test_class_table_markdown_and_text():
    s = _hand_case().scores()
    md = class_table(s, ["road", "car", "bus"])
    lines = md.splitlines()
    assert lines[0] == "| class | IoU % | Acc % | gt pixels |"
    assert "| road | 40.00 | 50.00 | 4 |" in lines
    assert "| bus | - | - | 0 |" in lines
    assert lines[-1] == "| **mean** | 45.00 | 58.33 | 7 |"
    text = class_table(s, ["road", "car", "bus"], markdown=False)
    assert "road" in text and "mean" in text and "|" not in text
    with pytest.raises(ValueError, match="class names"):
        class_table(s, ["road"])


@pytest.mark.parametrize("n", [3, 65])
def test_confusion_png(n):
    rng = np.random.default_rng(n)
    gt = rng.integers(0, n, 4000)
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, n + 2, gt.shape))
    cm = ConfusionMatrix(n).update(gt, pred)
    names = [f"construction--flat--class-{i}" for i in range(n)]
    png = confusion_png(cm, names, title="test")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert min(image.shape[:2]) >= 300 and max(image.shape[:2]) <= 3000


def test_pct_formats_every_report_table():
    assert pct(0.123456) == "12.35" and pct(0.123456, 1) == "12.3"
    assert pct(float("nan")) == "-" and pct(None) == "-"  # NaN in memory, None in the JSON reports
    assert pct(0.5, 1, missing="n/a", unit=" %") == "50.0 %" and pct(None, 1, missing="n/a", unit=" %") == "n/a"
