"""Sign evaluation (training/evaluation/signs.py, sign_instances.py, sign_report.py): hand-computed
scores on tiny arrays, the two decision modes on a hand-made logit map, and the command end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_hierarchy import FixedLogits, load_tiny
from tiny_training import make_tiny_data

from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.engines.torch_graph import DecisionGraph
from hiseg_ros.hierarchy import IGNORE, Hierarchy, load_hierarchy
from hiseg_ros.outputs import sign_leaf_lut
from training import REPO
from training.data.readers import load_dataset
from training.evaluation import signs
from training.evaluation.sign_instances import DetectionScores, SignBox, box_iou, match_signs
from training.evaluation.signs import ModeResult, SignTables, leaf_log_probabilities, training_decisions
from training.jobs import experiments

HIERARCHIES = REPO / "config" / "hierarchies"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_tiny(tmp_path_factory.mktemp("h"))


@pytest.fixture(scope="module")
def iv2018() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2018.yaml")


def _log_softmax(values: list[float], k: int) -> float:
    return values[k] - math.log(sum(math.exp(v) for v in values))


# ------------------------------------------------------------------ given the location
def test_leaf_log_probability_is_the_sum_over_the_path(tiny):
    root, sign, front = [0.5, 2.0, -1.0], [1.0, 0.2], [-0.3, 0.9]
    logits = {
        "root": torch.tensor(root).view(1, 3, 1, 1),
        "sign": torch.tensor(sign).view(1, 2, 1, 1),
        "front": torch.tensor(front).view(1, 2, 1, 1),
        "vehicle": torch.tensor([0.0, 3.0]).view(1, 2, 1, 1),
    }
    got = leaf_log_probabilities(tiny, logits, ["stop", "yield", "bus"])
    assert got.shape == (1, 3, 1, 1)
    stop = _log_softmax(root, 1) + _log_softmax(sign, 0) + _log_softmax(front, 0)
    bus = _log_softmax(root, 2) + _log_softmax([0.0, 3.0], 1)
    assert got[0, 0, 0, 0].item() == pytest.approx(stop, abs=1e-6)
    assert got[0, 2, 0, 0].item() == pytest.approx(bus, abs=1e-6)


def test_sibling_leaves_are_ranked_by_their_own_classifier_alone(tiny):
    """Root and "sign" decide nothing between stop and yield: only the "front" classifier does."""
    gen = torch.Generator().manual_seed(0)
    logits = {name: torch.randn(2, n, 4, 5, generator=gen) * 3 for name, n in tiny.classifier_sizes}
    got = leaf_log_probabilities(tiny, logits, ["stop", "yield"]).argmax(1)
    assert torch.equal(got, logits["front"].argmax(1))


# ------------------------------------------------------------------ instance matching
def _scores(truth: list[SignBox], detections: list[SignBox]) -> DetectionScores:
    return DetectionScores().add(truth, detections)


def test_box_iou_counts_inclusive_pixels():
    a, b = SignBox(0, 0, 3, 3, 1), SignBox(2, 0, 5, 3, 1)  # 4x4 each, 2x4 overlap
    assert box_iou(a, b) == pytest.approx(8 / 24)
    assert box_iou(a, SignBox(4, 0, 7, 3, 1)) == 0.0
    assert a.longer_side == 4 and SignBox(10, 0, 25, 3, 1).longer_side == 16


def test_one_of_two_signs_found_with_the_right_class_is_recall_half_precision_one():
    truth = [SignBox(0, 0, 19, 19, 1), SignBox(40, 0, 59, 19, 2)]
    found = _scores(truth, [SignBox(1, 0, 19, 19, 1, score=0.9)]).counts
    c = found["class", "all"]
    assert (c.true_positives, c.false_positives, c.false_negatives) == (1, 0, 1)
    assert c.precision == 1.0 and c.recall == 0.5


def test_right_location_wrong_class_is_a_miss_for_the_class_but_found_by_location():
    truth = [SignBox(0, 0, 19, 19, 1)]
    counts = _scores(truth, [SignBox(0, 0, 19, 19, 2)]).counts
    c, loc = counts["class", "all"], counts["location", "all"]
    assert (c.true_positives, c.false_positives, c.false_negatives) == (0, 1, 1)
    assert c.precision == 0.0 and c.recall == 0.0
    assert (loc.true_positives, loc.false_positives, loc.false_negatives) == (1, 0, 0)


def test_a_sign_is_found_once_by_the_most_confident_detection():
    truth = [SignBox(0, 0, 9, 9, 3)]
    weak, strong = SignBox(0, 0, 9, 9, 3, score=0.4), SignBox(1, 1, 9, 9, 3, score=0.8)
    assert match_signs(truth, [weak, strong], same_class=True) == [None, 0]
    c = _scores(truth, [weak, strong]).counts["class", "all"]
    assert (c.true_positives, c.false_positives, c.false_negatives) == (1, 1, 0)
    below = SignBox(0, 0, 9, 3, 3)  # IoU 0.4 < 0.5
    assert match_signs(truth, [below], same_class=False) == [None]


def test_a_detection_of_an_unboxed_sign_is_neither_right_nor_wrong():
    boxed, unboxed = [SignBox(0, 0, 19, 19, 1)], [SignBox(40, 0, 43, 3, 5)]
    detections = [SignBox(40, 0, 43, 2, 7), SignBox(60, 0, 63, 3, 5)]  # on the unboxed sign (IoU 0.75), on nothing
    counts = DetectionScores().add(boxed, detections, unboxed).counts
    for criterion in ("class", "location"):
        c = counts[criterion, "all"]
        assert (c.true_positives, c.false_positives, c.false_negatives) == (0, 1, 1)
    assert counts["class", "all"].precision == 0.0


def test_signs_of_at_least_16_px_by_the_longer_side_are_scored_apart():
    """Small true signs and detections matched to them are ignored in the >= 16 px subset; an
    unmatched detection is a false positive there only if its own box has a 16 px side."""
    big, small, edge = SignBox(0, 0, 19, 19, 1), SignBox(30, 0, 39, 9, 1), SignBox(50, 0, 65, 7, 1)  # 20, 10, 16
    detections = [
        SignBox(30, 0, 39, 9, 1),  # finds the small sign
        SignBox(100, 100, 111, 111, 1),  # 12 px, finds nothing
        SignBox(200, 200, 215, 203, 1),  # 16 px, finds nothing
        SignBox(0, 0, 19, 19, 1),  # finds the big sign
    ]
    counts = _scores([big, small, edge], detections).counts
    everything, large = counts["class", "all"], counts["class", "at_least_16px"]
    assert (everything.true_positives, everything.false_positives, everything.false_negatives) == (2, 2, 1)
    assert everything.precision == 0.5 and everything.recall == pytest.approx(2 / 3)
    assert (large.true_positives, large.false_positives, large.false_negatives) == (1, 1, 1)
    assert large.precision == 0.5 and large.recall == 0.5
    assert math.isnan(_scores([], []).counts["class", "all"].precision)


# ------------------------------------------------------------------ scores of one image
def _leaf(h: Hierarchy, name: str) -> int:
    return h.node(name).id


def test_node_instances_and_pixel_scores_on_a_hand_made_leaf_map(iv2018):
    """Two true signs (GTSDB 1 and 2); the leaf map labels only the first, with the right class."""
    tables = SignTables.of(iv2018, "traffic-sign-front")
    truth = np.full((20, 80), IGNORE, np.uint8)
    truth[:, 0:20], truth[:, 40:60] = 1, 2
    leaf = np.full((20, 80), _leaf(iv2018, "building"), np.uint8)
    leaf[:, 0:20] = _leaf(iv2018, "sign-speed-limit-30")  # GTSDB 1
    root = np.zeros((20, 80), np.uint8)
    result = ModeResult.empty(tables, given_location=False)
    boxes = [SignBox(0, 0, 19, 19, 1), SignBox(40, 0, 59, 19, 2)]
    result.add(tables, iv2018, truth, boxes, root, leaf, None, min_sign_area=16)
    c = result.detection.counts["class", "all"]
    assert (c.precision, c.recall) == (1.0, 0.5)
    iou = result.image_wide.scores().iou
    assert iou[1] == 1.0 and iou[2] == 0.0 and math.isnan(iou[3])
    on_sign = result.on_sign_pixels.scores()
    assert on_sign.pixel_accuracy == 0.5
    assert result.root_counts[0] == 800 and result.root_counts.sum() == 800


def test_a_sign_class_off_the_signs_is_a_false_positive_image_wide_only(iv2018):
    tables = SignTables.of(iv2018, "traffic-sign-front")
    truth = np.full((4, 8), IGNORE, np.uint8)
    truth[:, :4] = 1
    leaf = np.full((4, 8), _leaf(iv2018, "sign-speed-limit-30"), np.uint8)  # 16 true + 16 wrong pixels
    result = ModeResult.empty(tables, given_location=False)
    result.add(tables, iv2018, truth, [SignBox(0, 0, 3, 3, 1)], np.zeros_like(truth), leaf, None, 1)
    assert result.image_wide.scores().iou[1] == 0.5
    assert result.on_sign_pixels.scores().iou[1] == 1.0
    c = result.detection.counts["class", "all"]  # one 4x8 region: box IoU 0.5 with the 4x4 sign
    assert (c.true_positives, c.false_positives) == (1, 0)


def test_sign_instances_come_from_the_node_sign_class_or_the_hierarchy_declaration(iv2018):
    flat = load_hierarchy(HIERARCHIES / "iv2018_flat.yaml")
    gtsdb_leaves = sorted(flat.node(n).id for n in SignTables.of(flat, "").leaves)
    declared = SignTables.of(flat, "")  # the node's default: the classes declared traffic_sign: true
    assert np.array_equal(declared.sign_lut, sign_leaf_lut(flat, "")) and "traffic_sign classes" in declared.sign_source
    missing = SignTables.of(flat, "traffic-sign-front")  # a class the flat hierarchy does not have
    assert "has no class 'traffic-sign-front'" in missing.sign_source
    assert np.flatnonzero(missing.sign_lut).tolist() == gtsdb_leaves
    hierarchical = SignTables.of(iv2018, "traffic-sign-front")
    assert np.array_equal(hierarchical.sign_lut, sign_leaf_lut(iv2018, "traffic-sign-front"))
    assert hierarchical.num_classes == 43 and hierarchical.natives.tolist() == list(range(43))
    with pytest.raises(ValueError, match="GTSDB classes share leaves"):
        SignTables.of(load_hierarchy(HIERARCHIES / "iv2019.yaml"), "")


# ------------------------------------------------------------------ decision modes


def test_deployed_and_training_decisions_differ_on_a_hand_made_logit_map(iv2018):
    """Two feature cells, four pixels. Cell 0 says building (4) over vegetation (3.5), cell 1 traffic
    sign (4) over vegetation (3.5). Nearest: building building sign sign. Bilinear: the middle
    pixels blend 3:1 and 1:3, where vegetation (3.5) beats both (3 and 1)."""
    h = iv2018
    logits = {name: torch.zeros(1, n, 1, 2) for name, n in h.classifier_sizes}
    root = h.classifier("root").classes
    b, v, s = root.index("building"), root.index("vegetation"), root.index("traffic-sign")
    logits["root"][0, [b, v, s], 0, 0] = torch.tensor([4.0, 3.5, 0.0])
    logits["root"][0, [b, v, s], 0, 1] = torch.tensor([0.0, 3.5, 4.0])
    logits["traffic_sign"][0, h.classifier("traffic_sign").classes.index("traffic-sign-front")] = 1.0
    logits["traffic_sign_front"][0, h.classifier("traffic_sign_front").classes.index("sign-speed-limit-30")] = 1.0
    graph = DecisionGraph(FixedLogits(h, logits), h).eval()
    with torch.inference_mode():
        deployed = graph(torch.zeros(1, 1, 4, 3, dtype=torch.uint8))[-1][0].numpy()
    _, training = training_decisions(h, logits, (1, 4))
    building, vegetation, sl30 = (_leaf(h, n) for n in ("building", "vegetation", "sign-speed-limit-30"))
    assert deployed.tolist() == [[building, building, sl30, sl30]]
    assert training.tolist() == [[building, vegetation, vegetation, sl30]]

    tables = SignTables.of(h, "traffic-sign-front")
    truth = np.array([[IGNORE, IGNORE, 1, 1]], np.uint8)
    accuracy = {}
    for mode, leaf in (("deployed", deployed), ("training", training)):
        result = ModeResult.empty(tables, given_location=False)
        result.add(tables, h, truth, [SignBox(2, 0, 3, 0, 1)], np.zeros_like(truth), leaf, None, 1)
        accuracy[mode] = result.on_sign_pixels.scores().pixel_accuracy
    assert accuracy == {"deployed": 1.0, "training": 0.5}


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("signs_data"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, iv2018) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(shared_channels=16)
    return save_checkpoint(tmp_path_factory.mktemp("signs_ckpt") / "model.pt", config.build(iv2018), iv2018, config)


def _test_signs(data: Path) -> list[tuple[int, int, int, int, int]]:
    reader = load_dataset("gtsdb", data / "gtsdb", split="test")
    return [(b.x0, b.y0, b.x1, b.y1, int(b.label)) for i in range(len(reader)) for b in reader[i].boxes]


MODE_KEYS = {"end_to_end", "end_to_end_on_sign_pixels", "given_location", "detection", "root_on_true_sign_pixels"}


def test_command_on_a_checkpoint_prints_every_score_and_writes_them_as_json(tiny_data, checkpoint, tmp_path):
    out = tmp_path / "signs.json"
    cmd = [sys.executable, "-m", "training.evaluation.signs", str(checkpoint), "--data", str(tiny_data)]
    done = subprocess.run([*cmd, "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    report = json.loads(out.read_text())
    assert set(report) == {
        "model", "engine", "hierarchy", "data", "limit", "default_test_scale", "test_scale", "images",
        "sign_instances", "modes", "modes_differ", "root_on_cityscapes_val_signs",
    }  # fmt: skip
    assert report["test_scale"] == 1.0 and report["images"] == 3
    assert any("test scale 1.0 (the default; 1.0 = native size" in line for line in lines)
    assert report["sign_instances"]["min_sign_area"] == 16  # the node's, config/hiseg.yaml
    assert report["sign_instances"]["signs"] == "the leaves of the traffic_sign classes of iv2018"  # sign_class ""
    truth = _test_signs(tiny_data)  # gt.txt of the written test images
    large = sum(max(x1 - x0, y1 - y0) + 1 >= 16 for x0, y0, x1, y1, _ in truth)
    for mode in ("deployed", "training"):
        m = report["modes"][mode]
        assert set(m) == MODE_KEYS
        assert set(m["end_to_end"]) == {"miou", "iou"} and set(m["given_location"]) == {"miou", "pixel_accuracy", "iou"}
        for criterion, name in (("class", "right class"), ("location", "location only")):
            for subset, text, n in (("all", "all signs", len(truth)), ("at_least_16px", "signs >= 16 px", large)):
                c = m["detection"][criterion][subset]
                assert c["true_positives"] + c["false_negatives"] == n
                line = f"[{mode}] detection, {name}, {text}: precision "
                assert sum(x.startswith(line) and f"of {n} signs)" in x for x in lines) == 1
        for topic in ("end to end, image-wide: mIoU", "end to end on true sign pixels: mIoU",
                      "sign classes given the location: mIoU", "root on true sign pixels (gtsdb_test):"):  # fmt: skip
            assert sum(x.startswith(f"[{mode}] {topic}") for x in lines) == 1
        per_class = ", ".join(f"{k} {100 * v:.1f}" for k, v in m["end_to_end"]["iou"].items())
        assert any(x.startswith(f"[{mode}] end to end, image-wide") and x.endswith(per_class) for x in lines)
    assert report["modes_differ"]["pixels"] is not None
    assert any(x.startswith("decision modes differ on ") for x in lines)
    assert any(x.startswith("root on true sign pixels (cityscapes_val, deployed): ") for x in lines)


def test_command_on_an_exported_model_reports_the_deployed_decisions_only(exported_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "signs.json"
    argv = [str(exported_model), "--data", str(tiny_data), "--limit", "1", "--test-scale", "2", "--json", str(out)]
    assert signs.main([*argv, "--backend", "onnxruntime"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = json.loads(out.read_text())
    assert report["test_scale"] == 2.0 and report["images"] == 1
    assert any("test scale 2.0 (default 1.0;" in line for line in lines)
    assert report["modes"]["training"] is None and report["modes"]["deployed"]["given_location"] is None
    assert set(report["modes"]["deployed"]) == MODE_KEYS
    assert any(x.startswith("[training] not available (needs the logits") for x in lines)
    assert any(x.startswith("[deployed] sign classes given the location: not available") for x in lines)
    assert report["modes_differ"] == {"pixels": None, "true_sign_pixels": None}


def test_experiments_sign_columns_are_the_deployed_scores(tiny_data, checkpoint):
    result = experiments.evaluate_variant(checkpoint, tiny_data, limit=2)
    deployed = signs.evaluate_signs(TorchEngine(checkpoint), tiny_data, 2, modes=("deployed",)).modes["deployed"]
    for key, cm in (("signs", deployed.on_sign_pixels), ("signs_given_location", deployed.given_location)):
        scores = cm.scores()
        assert result[key] == {
            "miou": experiments._finite(scores.miou),
            "pixel_accuracy": experiments._finite(scores.pixel_accuracy),
        }
