"""The weak-only experiment: scoring against the full labels, the arms' configs, the results JSON, the command.

Data: the synthetic "small" preset (real formats: Cityscapes / Vistas folders, an OpenScapes tag set
with vehicles left out of some images and its true masks). Scoring is checked with predictors whose
answer is known (the truth itself; the truth with truck / bus / train called "car"), the command by
a real 1-iteration training of each arm in a subprocess (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hiseg_ros.hierarchy import IGNORE, Hierarchy, load_hierarchy
from training import REPO
from training.data.readers.base import read_index_png
from training.data.synthetic.generate import generate
from training.fit.config import load_config
from training.jobs import weak_only
from training.jobs.weak_only_eval import (
    WEAK_ONLY_LEAVES,
    native_to_leaf_lut,
    pixel_set_samples,
    same_tree,
    score_network,
    tag_set_samples,
)
from training.labels.pseudo_labels.batch import generate_labels, split_ids
from training.labels.pseudo_labels.classifier import TagClassifier, TrainConfig, save_classifier, tag_node_space

HIERARCHIES = REPO / "config" / "hierarchies"
FULL = HIERARCHIES / "iv2019.yaml"
WEAK = HIERARCHIES / "iv2019_weak_only.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(per-pixel root with cityscapes/ and vistas/, the tag set folder with absent vehicles)."""
    root = tmp_path_factory.mktemp("weak_only_data")
    generate(root / "pixel", "small", seed=0, only=["cityscapes", "vistas"])
    generate(root / "tags", "small", seed=0, only=["openscapes"], absent_vehicles=0.5)
    return root / "pixel", root / "tags" / "openscapes"


@pytest.fixture(scope="module")
def full() -> Hierarchy:
    return load_hierarchy(FULL)


def _decisions_of_truth(hierarchy: Hierarchy, space: str, label: np.ndarray, rename: dict[str, str]) -> dict:
    """Per-classifier decisions whose flattened leaf is the true leaf (``rename``: leaf -> leaf said instead)."""
    targets = hierarchy.targets(space, label)
    decisions = {k: np.where(v == IGNORE, 0, v).astype(np.uint8) for k, v in targets.items()}
    vehicle = hierarchy.classifier("vehicle").classes
    for said_for, said in rename.items():
        at = targets["vehicle"] == vehicle.index(said_for)
        decisions["vehicle"][at] = vehicle.index(said)
    return decisions


class TruthPredictor:
    """Answers every image of the three sets with its (possibly renamed) truth, looked up by the image bytes."""

    def __init__(self, hierarchy: Hierarchy, data_root: Path, tags_dir: Path, rename: dict[str, str]) -> None:
        sets = [
            ("vistas", tag_set_samples(tags_dir)),
            ("cityscapes", pixel_set_samples(data_root / "cityscapes", "cityscapes", "val")),
            ("vistas", pixel_set_samples(data_root / "vistas", "vistas", "validation")),
        ]
        self.answers = {
            image.tobytes(): _decisions_of_truth(hierarchy, space, label, rename)
            for space, samples in sets
            for image, label in samples
        }

    def __call__(self, image: np.ndarray) -> dict:
        return self.answers[image.tobytes()]


def test_native_to_leaf_lut_follows_the_full_tables(full: Hierarchy) -> None:
    lut = native_to_leaf_lut(full, "cityscapes")
    assert [int(lut[i]) for i in (26, 27, 28, 31, 7, 0)] == [13, 14, 15, 16, 0, IGNORE]
    weak = load_hierarchy(WEAK)
    assert int(native_to_leaf_lut(weak, "cityscapes")[27]) == IGNORE  # "vehicle" is no leaf
    same_tree(weak, full)
    with pytest.raises(ValueError, match="cannot score a network of 'iv2018'"):
        same_tree(load_hierarchy(HIERARCHIES / "iv2018.yaml"), full)


def test_scores_of_known_predictors(data: tuple[Path, Path], full: Hierarchy) -> None:
    data_root, tags_dir = data
    truths = [label for _, label in tag_set_samples(tags_dir)]
    assert len(truths) == 3  # the small preset's validation split, not its train images
    weak_ids = [54, 58, 61]  # Vistas bus, on-rails, truck
    assert any(np.isin(t, weak_ids).any() for t in truths), "the held-out tag images need a truck, bus or train"

    perfect = score_network(TruthPredictor(full, data_root, tags_dir, {}), full, data_root, tags_dir)
    for name, score in perfect.items():
        assert score["leaf_miou"] == 1.0, name
        assert all(v in (None, 1.0) for v in score["iou"].values())
        assert all(v == 1.0 for v in score["classifiers"].values())
    assert perfect["tags"]["weak_only_miou"] == 1.0 and perfect["tags"]["images"] == 3

    # what a network that never learned the three leaves does: calls them all "car"
    as_car = dict.fromkeys(WEAK_ONLY_LEAVES, "car")
    blind = score_network(TruthPredictor(full, data_root, tags_dir, as_car), full, data_root, tags_dir)
    assert blind["tags"]["weak_only_miou"] == 0.0
    truth = np.concatenate([t.ravel() for t in truths])
    car, trucks_etc = (truth == 55).sum(), np.isin(truth, weak_ids).sum()
    assert blind["tags"]["iou"]["car"] == pytest.approx(car / (car + trucks_etc))
    assert blind["tags"]["classifiers"]["root"] == 1.0  # the root was right everywhere


def test_arm_configs_are_thin_files_over_the_shipped_ones(data: tuple[Path, Path], tmp_path: Path) -> None:
    data_root, _ = data
    view = tmp_path / "view"
    loaded = {}
    for name, arm in weak_only.ARMS.items():
        if arm.precomputed:
            continue
        raw = weak_only.arm_config(arm, data_root, view, 7, (64, 128), tmp_path / name)
        assert raw["base"] == str(REPO / "config" / "training" / arm.config)
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(raw))
        loaded[name], hierarchy = load_config(path, check_data=False)
        assert hierarchy.name == "iv2019_weak_only" and loaded[name].schedule.iterations == 7
    uniform, pixel = loaded["uniform"], loaded["pixel_only"]
    assert [uniform.dataset_root(d) for d in uniform.datasets] == [
        data_root / "cityscapes",
        data_root / "vistas",
        view,
    ]
    assert [d.name for d in pixel.datasets] == ["cityscapes", "vistas"]
    assert uniform.augment.crop == (64, 128) and uniform.loss.weights == pixel.loss.weights
    assert uniform.run.seed == 0  # the default seed; another one reaches the trainer's config
    path.write_text(
        json.dumps(weak_only.arm_config(weak_only.ARMS["pixel_only"], data_root, None, 7, (64, 128), tmp_path, seed=3))
    )
    assert load_config(path, check_data=False)[0].run.seed == 3
    raw = weak_only.arm_config(weak_only.ARMS["pseudo"], data_root, view, 7, (64, 128), tmp_path, tmp_path / "labels")
    assert raw["pseudo_labels"] == {"precomputed": {"openscapes": {"dir": str(tmp_path / "labels"), "output": "hard"}}}
    untaught = dict(tag_classifiers="untaught")
    raw = weak_only.arm_config(weak_only.ARMS["pseudo"], data_root, view, 7, (64, 128), tmp_path, view, **untaught)
    assert raw["pseudo_labels"]["tag_classifiers"] == "untaught" and "precomputed" in raw["pseudo_labels"]
    path.write_text(
        json.dumps(weak_only.arm_config(weak_only.ARMS["uniform"], data_root, view, 7, (64, 128), tmp_path, **untaught))
    )
    assert load_config(path, check_data=False)[0].pseudo_labels.tag_classifiers == "untaught"
    pixel_only = weak_only.arm_config(weak_only.ARMS["pixel_only"], data_root, None, 7, (64, 128), tmp_path, **untaught)
    assert "pseudo_labels" not in pixel_only  # no tag set, nothing to restrict
    with pytest.raises(ValueError, match="needs the precomputed pseudo-label folder"):
        weak_only.arm_config(weak_only.ARMS["pseudo"], data_root, view, 7, (64, 128), tmp_path)
    with pytest.raises(ValueError, match="trains on the tag set"):
        weak_only.arm_config(weak_only.ARMS["uniform"], data_root, None, 7, (64, 128), tmp_path)


def test_results_file_keeps_what_a_measurement_did_not_measure(tmp_path: Path) -> None:
    path = tmp_path / "weak_labels.json"
    first = weak_only.update_results(path, "cmd a", {"pseudo_label_miou": 23.2, "ablation": {"crf": 23.2}})
    assert first["weak_only_classes_miou"] == {"pseudo": None, "uniform": None, "pixel_only": None}
    runs = {"uniform": {"scores": {"tags": {"weak_only_miou": 0.1234}, "cityscapes": {"weak_only_miou": None}}}}
    doc = weak_only.update_results(path, "cmd b", weak_only.arm_headline(runs))
    assert json.loads(path.read_text()) == doc
    assert doc["pseudo_label_miou"] == 23.2 and doc["ablation"] == {"crf": 23.2}
    assert doc["weak_only_classes_miou"] == {"pseudo": None, "uniform": 12.3, "pixel_only": None}
    assert doc["weak_only_classes_miou_cityscapes"]["uniform"] is None
    assert doc["commands"] == ["cmd a", "cmd b"] and isinstance(doc["measured"], str)
    again = weak_only.update_results(path, "cmd a", {"ablation": {"regions": 25.0}})
    assert again["ablation"] == {"crf": 23.2, "regions": 25.0} and again["commands"] == ["cmd a", "cmd b"]


def test_command_refuses_missing_pseudo_labels(data: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    data_root, tags_dir = data
    argv = ["--data", str(data_root), "--tags", str(tags_dir), "--out", str(tmp_path / "out")]
    assert weak_only.main([*argv, "--pseudo-labels", str(tmp_path / "none")]) == 2
    assert f"no pseudo-label folder {tmp_path / 'none'}" in capsys.readouterr().err
    assert weak_only.main([*argv, "--arms", "uniform,nope"]) == 2
    assert "unknown arms ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.slow
def test_command_trains_and_scores_the_three_arms(data: tuple[Path, Path], tmp_path: Path) -> None:
    data_root, tags_dir = data
    torch.manual_seed(0)
    nodes = tag_node_space(load_hierarchy(WEAK), "openscapes")
    classifier = TagClassifier(nodes, TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    save_classifier(classifier, tmp_path / "tags.pt")
    settings = {
        "classifier": str(tmp_path / "tags.pt"),
        "stages": {"saliency": False, "erasing": False, "crf": False},
        "work_max_side": 48,
    }
    labels = tmp_path / "labels"
    train_ids = split_ids(tags_dir, "train")
    report = generate_labels("openscapes", tags_dir, WEAK, settings, labels, 1, train_ids, progress=False)
    assert report.done == len(train_ids) == 6
    results = tmp_path / "weak_labels.json"
    argv = ["--data", str(data_root), "--tags", str(tags_dir), "--pseudo-labels", str(labels)]
    argv += ["--out", str(tmp_path / "out"), "--iterations", "1", "--crop", "64", "128", "--limit", "1"]
    assert weak_only.main([*argv, "--results", str(results)]) == 0
    runs = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(runs) == {"pseudo", "uniform", "pixel_only"}
    for name, run in runs.items():
        assert (tmp_path / "out" / name / "last.pt").is_file()
        assert {s: run["scores"][s]["images"] for s in ("tags", "cityscapes", "vistas")} == dict.fromkeys(
            ("tags", "cityscapes", "vistas"), 1
        )
    # the arms trained on the train split's view only: the held-out images are not in it
    view = {p.stem for p in (tmp_path / "out" / "_data" / "openscapes_train" / "images").iterdir()}
    assert view == train_ids and not view & split_ids(tags_dir, "validation")
    doc = json.loads(results.read_text())
    expected = {n: None if r["scores"]["tags"]["weak_only_miou"] is None else 0 for n, r in runs.items()}
    assert {n: None if v is None else 0 for n, v in doc["weak_only_classes_miou"].items()} == expected
    assert doc["commands"][0].startswith("python -m training.jobs.weak_only --data ")
    saved = (tmp_path / "out" / "pseudo" / "arm_config.yaml").read_text()
    assert str(labels) in saved and "weak_only.yaml" in saved
    assert read_index_png(next(labels.glob("*.png"))).ndim == 2
