"""Evaluation over tiny Cityscapes / Vistas folders, and equality with the official Cityscapes tool.

The predictors here are test data: an oracle that knows each test image's intended leaf map
(derived from the ground truth, plus controlled errors) and answers with the per-classifier
decisions that lead to those leaves, exactly as a network would be judged. The command line runs
a real model file through a runtime engine.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import IGNORE, Hierarchy, load_hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training import REPO
from training.data.readers import CityscapesDataset, VistasDataset
from training.data.readers.base import Sample
from training.data.readers.label_tables import VISTAS_V12_LABELS
from training.evaluation.evaluate import (
    CityscapesPredictionWriter,
    Evaluator,
    cityscapes_label_lut,
    engine_predictor,
    evaluate,
    main,
)

H, W = 16, 24
CS_INSTANCE_IDS = range(24, 34)  # person .. bicycle carry instances in Cityscapes


# ---------------------------------------------------------------------- test data
def _blocks(rng: np.random.Generator, ids: Sequence[int], block: int = 4) -> np.ndarray:
    """H x W label map of ``block``-sized squares, every id of ``ids`` at least once."""
    cells = (H // block) * (W // block)
    assert cells >= len(ids)
    grid = np.concatenate([np.asarray(ids), rng.choice(np.asarray(ids), cells - len(ids))])
    rng.shuffle(grid)
    grid = grid.reshape(H // block, W // block)
    return np.kron(grid, np.ones((block, block), dtype=np.int64)).astype(np.uint8)


def write_cityscapes(root: Path, split: str, frames: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
    """leftImg8bit + gtFine labelIds + instanceIds (labelId*1000+k on instance classes, labelId elsewhere)."""
    for sample_id, label in frames.items():
        city = sample_id.split("_")[0]
        img_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        assert cv2.imwrite(str(img_dir / f"{sample_id}_leftImg8bit.png"), image)
        assert cv2.imwrite(str(gt_dir / f"{sample_id}_gtFine_labelIds.png"), label)
        block_index = np.arange(H * W).reshape(H, W) // 4  # several instances per class
        instances = np.where(np.isin(label, CS_INSTANCE_IDS), label.astype(np.int64) * 1000 + block_index % 7, label)
        assert cv2.imwrite(str(gt_dir / f"{sample_id}_gtFine_instanceIds.png"), instances.astype(np.uint16))


def write_vistas(root: Path, split: str, frames: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
    labels = [{"name": lb.name, "readable": lb.readable, "color": list(lb.color)} for lb in VISTAS_V12_LABELS]
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"labels": labels}))
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    for key, label in frames.items():
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / split / "images" / f"{key}.jpg"), image)
        assert cv2.imwrite(str(root / split / "labels" / f"{key}.png"), label)


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def perfect_leaf_lut(h: Hierarchy, dataset: str, for_ignored: str = "car") -> np.ndarray:
    """Native id -> a leaf that is right for it (first descendant of a coarse class).

    Ignored native ids get ``for_ignored`` on purpose: a prediction there must not count.
    """
    lut = np.full(256, h.node(for_ignored).id, dtype=np.int64)
    for native, target in h.dataset(dataset).ids.items():
        if int(native) >= 0 and target is not None:
            node = h.node(target)
            lut[int(native)] = node.id if node.classifier is None else h.descendant_leaves(target)[0].id
    return lut


class OraclePredictor:
    """Decisions leading to the intended leaf map of each known test image.

    ``swap`` exchanges two leaves everywhere; ``noise_off_path`` scrambles every sub-classifier
    where the intended leaf is not below it (pixels whose target is IGNORE for it).
    """

    def __init__(
        self,
        h: Hierarchy,
        leaf_maps: Mapping[str, np.ndarray],
        swap: tuple[str, str] | None = None,
        noise_off_path: bool = False,
    ) -> None:
        self.h = h
        self.leaf_maps = dict(leaf_maps)
        self.noise_off_path = noise_off_path
        size = h.max_leaf_id + 1
        self.swap = np.arange(size)
        if swap:
            a, b = h.node(swap[0]).id, h.node(swap[1]).id
            self.swap[a], self.swap[b] = b, a
        self.luts = {clf.name: np.zeros(size, dtype=np.uint8) for clf in h.classifiers}
        self.inside = {clf.name: np.zeros(size, dtype=bool) for clf in h.classifiers}
        for leaf in h.leaves:
            for clf_name, index in h.path(leaf.name):
                self.luts[clf_name][leaf.id] = index
                self.inside[clf_name][leaf.id] = True

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        leaves = self.swap[self.leaf_maps[_image_key(image)]]
        out = {}
        for clf in self.h.classifiers:
            dec = self.luts[clf.name][leaves]
            if self.noise_off_path and clf.name != "root":
                dec = np.where(self.inside[clf.name][leaves], dec, (dec + 1) % clf.num_classes).astype(np.uint8)
            out[clf.name] = dec
        return out


def oracle_maps(h: Hierarchy, readers: Sequence, error=None) -> dict[str, np.ndarray]:
    """Intended leaf map per image: perfect from the gt, then ``error(sample, leaves)`` if given."""
    maps = {}
    for reader in readers:
        lut = perfect_leaf_lut(h, reader.name)
        for sample in reader:
            leaves = lut[sample.label]
            maps[_image_key(sample.image)] = leaves if error is None else error(sample, leaves)
    return maps


@pytest.fixture(scope="module")
def hierarchy() -> Hierarchy:
    return load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml")


@pytest.fixture(scope="module")
def readers(tmp_path_factory) -> list:
    rng = np.random.default_rng(1)
    base = tmp_path_factory.mktemp("data")
    cs_ids = [0, 4, 7, 8, 9, 11, 17, 20, 21, 23, 24, 25, 26, 27]
    write_cityscapes(
        base / "cityscapes",
        "val",
        {f"aachen_000000_00000{i}": _blocks(rng, cs_ids) for i in range(2)},
        rng,
    )
    vistas_ids = [7, 13, 14, 15, 19, 20, 21, 22, 27, 49, 50, 55, 61, 65]
    write_vistas(base / "vistas", "validation", {f"v{i}": _blocks(rng, vistas_ids) for i in range(2)}, rng)
    return [CityscapesDataset(base / "cityscapes", "val"), VistasDataset(base / "vistas", "validation")]


def _defined(result) -> dict[str, float]:
    return {k: float(v) for k, v in zip(result.class_names, result.scores.iou, strict=True) if not math.isnan(v)}


# ---------------------------------------------------------------------- tests
def test_perfect_predictor_scores_one_everywhere(hierarchy, readers):
    report = evaluate(hierarchy, OraclePredictor(hierarchy, oracle_maps(hierarchy, readers)), readers, progress=False)
    assert report.samples == {"cityscapes": 2, "vistas": 2}
    for name in ("root", "drivable", "rider", "traffic_sign"):
        s = report.classifiers[name].scores
        assert (s.miou, s.macc, s.pixel_accuracy) == (1.0, 1.0, 1.0), name
    # GTSDB classes have no pixel targets here: nothing counted, nothing claimed
    assert report.classifiers["traffic_sign_front"].confusion.matrix.sum() == 0
    for name in ("cityscapes", "vistas"):
        s = report.datasets[name].scores
        assert (s.miou, s.macc, s.pixel_accuracy, s.void_pixels) == (1.0, 1.0, 1.0, 0), name
    assert set(_defined(report.datasets["cityscapes"])) == {
        "road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "rider", "car", "truck",
    }  # fmt: skip


def test_swapping_two_leaves_lowers_exactly_those_classes(hierarchy, readers):
    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, readers), swap=("car", "truck"))
    report = evaluate(hierarchy, predictor, readers, progress=False)
    for result, (car, truck) in (
        (report.classifiers["root"], ("car", "truck")),
        (report.datasets["cityscapes"], ("car", "truck")),
        (report.datasets["vistas"], ("object--vehicle--car", "object--vehicle--truck")),
    ):
        iou = _defined(result)
        assert iou[car] == 0.0 and iou[truck] == 0.0, result.name
        assert all(v == 1.0 for k, v in iou.items() if k not in (car, truck)), result.name
    for name in ("drivable", "rider", "traffic_sign"):
        assert report.classifiers[name].scores.miou == 1.0


def test_swap_inside_a_sub_classifier(hierarchy, readers):
    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, readers), swap=("road", "bike-lane"))
    report = evaluate(hierarchy, predictor, readers, progress=False)
    drivable = _defined(report.classifiers["drivable"])
    assert drivable["road"] < 1.0 and drivable["bike-lane"] < 1.0
    assert all(v == 1.0 for k, v in drivable.items() if k not in ("road", "bike-lane"))
    assert report.classifiers["root"].scores.miou == 1.0
    vistas = _defined(report.datasets["vistas"])
    assert vistas["construction--flat--road"] < 1.0 and vistas["construction--flat--bike-lane"] < 1.0
    # both leaves mean Cityscapes "road": Cityscapes cannot see the mistake
    assert report.datasets["cityscapes"].scores.miou == 1.0


def test_per_classifier_ignores_ignore_pixels(hierarchy, readers):
    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, readers), noise_off_path=True)
    report = evaluate(hierarchy, predictor, readers, progress=False)
    for name in ("root", "drivable", "rider", "traffic_sign"):
        assert report.classifiers[name].scores.miou == 1.0, name
    assert report.datasets["vistas"].scores.miou == 1.0  # the decision rule never looks there either
    # counted pixels are exactly the non-IGNORE targets
    expected = {clf.name: 0 for clf in hierarchy.classifiers}
    for reader in readers:
        for sample in reader:
            for name, target in hierarchy.targets(reader.name, sample.label).items():
                expected[name] += int((target != IGNORE).sum())
    assert {k: int(v.confusion.matrix.sum()) for k, v in report.classifiers.items()} == expected


def test_leaves_without_counterpart_count_as_false_negatives(hierarchy, readers):
    def parking_on_cars(sample: Sample, leaves: np.ndarray) -> np.ndarray:
        return np.where(sample.label == 26, hierarchy.node("parking").id, leaves)  # parking: not evaluated

    maps = oracle_maps(hierarchy, readers[:1], parking_on_cars)
    report = evaluate(hierarchy, OraclePredictor(hierarchy, maps), readers[:1], progress=False)
    cs = report.datasets["cityscapes"]
    s = cs.scores
    car = cs.class_names.index("car")
    assert s.iou[car] == 0.0 and s.void_pixels == s.gt_pixels[car] > 0
    assert all(v == 1.0 for k, v in _defined(cs).items() if k != "car")


def test_evaluator_merge_equals_single_pass(hierarchy, readers):
    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, readers), swap=("car", "person"))
    single, parts = Evaluator(hierarchy), [Evaluator(hierarchy), Evaluator(hierarchy)]
    for r, reader in enumerate(readers):
        for sample in reader:
            decisions = predictor(sample.image)
            single.add(reader.name, sample.label, decisions)
            parts[r].add(reader.name, sample.label, decisions)
    merged = parts[0]
    merged += parts[1]
    a, b = single.report().to_dict(), merged.report().to_dict()
    a.pop("predictor_seconds_per_image"), b.pop("predictor_seconds_per_image")
    assert a == b


def test_report_files(hierarchy, readers, tmp_path):
    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, readers), swap=("car", "truck"))
    report = evaluate(hierarchy, predictor, readers, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    data = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN was written as null
    assert data["samples"] == {"cityscapes": 2, "vistas": 2}
    assert data["datasets"]["cityscapes"]["miou"] == pytest.approx(report.datasets["cityscapes"].scores.miou)
    bus = next(c for c in data["datasets"]["cityscapes"]["classes"] if c["name"] == "bus")
    assert bus["iou"] is None and bus["gt_pixels"] == 0
    assert len(data["classifiers"]["drivable"]["confusion"]) == 10
    md = (out / "report.md").read_text()
    for name in [*report.datasets, *report.classifiers]:
        kind = "dataset" if name in report.datasets else "classifier"
        png = out / f"confusion_{kind}_{name}.png"
        assert cv2.imread(str(png)) is not None, png
        assert f"({png.name})" in md
    assert "| car | 0.00 |" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_predictor_output_and_box_dataset_are_errors(hierarchy, readers):
    def missing(image):
        return {"root": np.zeros(image.shape[:2], np.uint8)}

    with pytest.raises(ValueError, match="no decisions for classifier 'drivable'"):
        evaluate(hierarchy, missing, readers[:1], progress=False)

    def out_of_range(image):
        return {c.name: np.full(image.shape[:2], c.num_classes, np.uint8) for c in hierarchy.classifiers}

    with pytest.raises(ValueError, match="expected 0..52"):
        evaluate(hierarchy, out_of_range, readers[:1], progress=False)

    class Boxes:
        name = "gtsdb"

        def __len__(self):
            raise AssertionError("must fail before reading")

    with pytest.raises(ValueError, match="only per-pixel datasets"):
        evaluate(hierarchy, missing, [Boxes()], progress=False)


def test_cityscapes_label_lut(hierarchy):
    lut = cityscapes_label_lut(hierarchy)
    ids = {name: int(lut[hierarchy.node(name).id]) for name in ("road", "bike-lane", "parking", "bird", "curb")}
    assert ids == {"road": 7, "bike-lane": 7, "parking": 9, "bird": 0, "curb": 8}
    assert lut[hierarchy.node("sign-stop").id] == 20 and lut[hierarchy.node("traffic-sign-back").id] == 0
    assert lut[hierarchy.void_value] == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # np.in1d inside cityscapesscripts
def test_cityscapes_results_identical_to_official_tool(hierarchy, tmp_path, monkeypatch):
    """19-class IoUs and their mean equal cityscapesscripts' on the PNGs our writer produces."""
    from cityscapesscripts.helpers.labels import name2label

    official = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

    rng = np.random.default_rng(7)
    root, results = tmp_path / "cityscapes", tmp_path / "results"
    # gt: evaluated classes except bus (never present, never predicted: undefined on both sides) and
    # train (only predicted: IoU 0 on both sides), plus ignored ids (unlabeled, ego, static, ground,
    # parking, caravan, polegroup).
    gt_ids = [0, 1, 4, 6, 9, 29, 18, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 32, 33]
    frames = {
        "aachen_000000_000019": _blocks(rng, gt_ids, 2),
        "aachen_000001_000019": _blocks(rng, gt_ids, 4),
        "bochum_000000_000313": _blocks(rng, gt_ids, 2),
    }
    write_cityscapes(root, "val", frames, rng)
    reader = CityscapesDataset(root, "val")
    candidates = np.array([leaf.id for leaf in hierarchy.leaves if leaf.name != "bus"])

    def errors(sample: Sample, leaves: np.ndarray) -> np.ndarray:
        # ~30 % of pixels get a random leaf: other classes, unlabeled (0), parking (9), ego (1), train (31), ...
        wrong = rng.random(leaves.shape) < 0.3
        return np.where(wrong, rng.choice(candidates, leaves.shape), leaves)

    predictor = OraclePredictor(hierarchy, oracle_maps(hierarchy, [reader], errors))
    writer = CityscapesPredictionWriter(hierarchy, results)
    ours = evaluate(hierarchy, predictor, [reader], sinks=[writer], progress=False).datasets["cityscapes"]
    written = sorted(results.rglob("*.png"))
    assert [p.name for p in written] == [f"{k}_pred_labelIds.png" for k in sorted(frames)]
    predicted_ids = set(np.unique(np.concatenate([cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ravel() for p in written])))
    assert {0, 1, 9, 31} <= predicted_ids and 28 not in predicted_ids

    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    args = official.CArgs()
    vars(args).update(vars(official.args))  # the tool's defaults, without touching its module state
    args.cityscapesPath = str(root)
    args.groundTruthSearch = os.path.join(root, "gtFine", "val", "*", "*_gtFine_labelIds.png")
    args.predictionPath = None  # getPrediction() then reads CITYSCAPES_RESULTS
    args.predictionWalk = None
    args.quiet, args.JSONOutput, args.colorized, args.bold, args.nocol = True, False, False, "", ""
    args.evalInstLevelScore = True  # instanceIds are present, so the full evaluation runs
    gt_files = sorted(glob.glob(args.groundTruthSearch))
    predictions = [official.getPrediction(args, gt) for gt in gt_files]
    result = official.evaluateImgLists(predictions, gt_files, args)

    official_iou = result["classScores"]
    compared = 0
    for i, name in enumerate(ours.class_names):
        theirs, mine = official_iou[name], float(ours.scores.iou[i])
        assert name2label[name].id == hierarchy.dataset("cityscapes").evaluation.classes[i][0]
        if math.isnan(theirs):
            assert math.isnan(mine), name
        else:
            assert mine == pytest.approx(theirs, abs=1e-9), name
            compared += 1
        assert int(np.asarray(result["confMatrix"])[name2label[name].id].sum()) == int(ours.scores.gt_pixels[i])
    assert compared == 18 and math.isnan(official_iou["bus"]) and official_iou["train"] == 0.0
    assert ours.scores.miou == pytest.approx(result["averageScoreClasses"], abs=1e-9)
    assert 0.2 < ours.scores.miou < 0.9  # the errors really were varied


@pytest.fixture(scope="module")
def checkpoint(hierarchy, tmp_path_factory) -> Path:
    """A randomly initialised model of ``hierarchy``, saved as the training job saves one."""
    torch.manual_seed(0)
    config = ModelConfig("mobilenet_v2", 16, 32, 1, 1)
    net = HierarchicalSegNet(hierarchy.classifier_sizes, "mobilenet_v2", 16, 32, 1, 1, pretrained=None).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", net, hierarchy, config)


def test_engine_predictor_returns_the_engine_decisions(hierarchy, checkpoint):
    predictor = engine_predictor(hierarchy, checkpoint, backend="torch")
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    got = predictor(image)
    want = TorchEngine(checkpoint).infer(image).per_classifier
    assert set(got) == set(hierarchy.classifier_names)
    for name in got:
        np.testing.assert_array_equal(got[name], want[name])


def test_engine_predictor_refuses_a_model_of_another_hierarchy(checkpoint):
    iv2019 = load_hierarchy(REPO / "config" / "hierarchies" / "iv2019.yaml")
    with pytest.raises(ValueError, match="hierarchy 'iv2018' differs from the evaluated hierarchy 'iv2019'"):
        engine_predictor(iv2019, checkpoint, backend="torch")


def test_command_line(hierarchy, readers, checkpoint, tmp_path, capsys):
    cs = readers[0]
    code = main(
        [
            "--hierarchy", str(REPO / "config/hierarchies/iv2018.yaml"),
            "--dataset", "cityscapes", str(cs.root), "val",
            "--model", str(checkpoint), "--backend", "torch",
            "--out", str(tmp_path / "out"), "--cityscapes-results", str(tmp_path / "pred"),
            "--limit", "1", "--no-progress", "--no-plots",
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["samples"] == {"cityscapes": 1}
    assert set(data["classifiers"]) == set(hierarchy.classifier_names)
    assert 0 <= data["datasets"]["cityscapes"]["miou"] <= 1
    assert (tmp_path / "pred" / "aachen" / "aachen_000000_000000_pred_labelIds.png").is_file()
    assert "| cityscapes | 1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--hierarchy", "x.yaml", "--dataset", "cityscapes", "--model", "m.onnx", "--out", "o"])
    with pytest.raises(SystemExit):  # argparse choices come from the engines' BACKENDS
        main(["--hierarchy", "x.yaml", "--dataset", "cityscapes", "r", "--model", "m.onnx", "--backend", "trt"])
