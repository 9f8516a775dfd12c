"""The weak-only set-up: per-pixel sets label truck / bus / train only as "vehicle", tags keep them as leaves.

Checks the shipped hierarchy variant against iv2019 (same tree, only those dataset ids coarser),
the targets it gives (an inner-node per-pixel label teaches the root only), and the training configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hiseg_ros.hierarchy import IGNORE, Hierarchy, load_hierarchy
from training import REPO
from training.data.readers.base import Sample
from training.fit.config import load_config
from training.labels.targets import TargetBuilder

HIERARCHIES = REPO / "config" / "hierarchies"
CONFIGS = REPO / "config" / "training"
WEAK_ONLY_LEAVES = ("truck", "bus", "train")
COARSENED = {"cityscapes": {27: "truck", 28: "bus", 31: "train"}, "vistas": {54: "bus", 58: "train", 61: "truck"}}


@pytest.fixture(scope="module")
def full() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2019.yaml")


@pytest.fixture(scope="module")
def weak() -> Hierarchy:
    return load_hierarchy(HIERARCHIES / "iv2019_weak_only.yaml")


def test_same_tree_and_tags_as_iv2019_only_the_three_per_pixel_ids_coarser(full: Hierarchy, weak: Hierarchy) -> None:
    assert [(n.name, n.id, n.parent, n.color) for n in weak.classes] == [
        (n.name, n.id, n.parent, n.color) for n in full.classes
    ]
    assert [(c.name, c.classes) for c in weak.classifiers] == [(c.name, c.classes) for c in full.classifiers]
    for name in ("openscapes", "gtsdb"):
        assert weak.dataset(name).ids == full.dataset(name).ids
    for name, changed in COARSENED.items():
        mine, theirs = weak.dataset(name).ids, full.dataset(name).ids
        assert {k: v for k, v in theirs.items() if v != mine[k]} == changed
        assert all(mine[k] == "vehicle" for k in changed)
    # the tag set still names the three leaves: the only teacher of the vehicle classifier for them
    assert {weak.dataset("openscapes").ids[t] for t in WEAK_ONLY_LEAVES} == set(WEAK_ONLY_LEAVES)
    # evaluation still scores them against Cityscapes' own truck / bus / train ids
    native = weak.leaf_to_native("cityscapes")
    assert (native["truck"], native["bus"], native["train"]) == (27, 28, 31)
    assert np.array_equal(weak.leaf_to_eval_lut("cityscapes"), full.leaf_to_eval_lut("cityscapes"))


def test_an_inner_node_pixel_label_teaches_the_root_and_not_the_vehicle_classifier(weak: Hierarchy) -> None:
    builder = TargetBuilder(weak)
    vehicle = weak.classifier("vehicle").classes
    root = weak.classifier("root").classes
    for dataset, ids in (("cityscapes", [26, 27, 28, 31, 24]), ("vistas", [55, 61, 54, 58, 19])):
        label = np.array([ids], np.uint8)
        image = np.zeros((1, len(ids), 3), np.uint8)
        targets = builder(Sample(dataset, "x", image, label))
        assert targets.kind == "pixel"
        assert [root[i] for i in targets.hard["root"][0]] == ["vehicle"] * 4 + ["human"]
        assert targets.hard["vehicle"][0, 0] == vehicle.index("car")  # a leaf label still teaches it
        assert (targets.hard["vehicle"][0, 1:4] == IGNORE).all()  # "vehicle" says nothing below it
        assert targets.hard["human"][0, 4] == weak.classifier("human").classes.index("person")


def test_the_tags_teach_the_vehicle_classifier_the_three_leaves(weak: Hierarchy) -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    targets = TargetBuilder(weak)(Sample("openscapes", "t", image, None, tags=("bus", "truck")))
    assert targets.kind == "weak" and targets.from_tags
    assert (targets.hard["root"] == IGNORE).all()  # weak data never trains the root
    soft = targets.soft["vehicle"]
    classes = weak.classifier("vehicle").classes
    assert soft.valid.all()
    row = soft.table[soft.index[0, 0]]
    assert row[classes.index("bus")] == pytest.approx(0.5) and row[classes.index("truck")] == pytest.approx(0.5)


def test_training_configs_inherit_the_default_recipe() -> None:
    default, _ = load_config(CONFIGS / "default.yaml", check_data=False)
    uniform, hierarchy = load_config(CONFIGS / "weak_only.yaml", check_data=False)
    pixel, pixel_h = load_config(CONFIGS / "weak_only_pixel.yaml", check_data=False)
    assert hierarchy.name == pixel_h.name == "iv2019_weak_only"
    assert [(d.name, d.per_batch) for d in uniform.datasets] == [("cityscapes", 1), ("vistas", 2), ("openscapes", 1)]
    assert [d.name for d in pixel.datasets] == ["cityscapes", "vistas"]
    assert uniform.dataset_root(uniform.datasets[2]).resolve() == REPO / "data" / "synthetic_weak" / "openscapes"
    assert uniform.loss.weights == {"root": 1.0, "human": 0.1, "vehicle": 0.1} == pixel.loss.weights
    assert not uniform.precomputed_labels and not pixel.precomputed_labels  # uniform tiling; the job adds pseudo
    for config in (uniform, pixel):
        assert config.model.to_dict() == default.model.to_dict()
        assert (config.augment, config.optimizer, config.schedule) == (
            default.augment,
            default.optimizer,
            default.schedule,
        )
        assert [d.crops for d in config.datasets[:2]] == [d.crops for d in default.datasets[:2]]


def _run(seed: int, weak: float, human: float) -> dict:
    scores = {
        "tags": {
            "weak_only_miou": weak,
            "leaf_miou": 0.2,
            "classifiers": {"root": 0.3, "human": human, "vehicle": 0.1},
        },
        "cityscapes": {"weak_only_miou": weak / 2, "leaf_miou": 0.2, "classifiers": {"root": 0.3, "human": 0.5}},
    }
    return {"pseudo": {"scores": scores, "seed": seed}, "uniform": {"scores": scores, "seed": seed}}


def test_seed_summary_means_and_spreads_over_runs(tmp_path: Path) -> None:
    from training.jobs.weak_only_seeds import main, markdown, summarise

    runs = [_run(0, 0.30, 0.60), _run(1, 0.20, 0.70), _run(2, 0.10, 0.65)]
    runs[2].pop("uniform")  # only the arms every run has
    summary = summarise(runs)
    assert summary["seeds"] == [0, 1, 2] and set(summary) == {"seeds", "pseudo"}
    weak = summary["pseudo"]["truck / bus / train, tag set"]
    assert weak == {"values": [30.0, 20.0, 10.0], "mean": 20.0, "std": 10.0}
    assert summary["pseudo"]["human, tag set"]["mean"] == 65.0
    assert summary["pseudo"]["vehicle, tag set"]["values"] == [10.0, 10.0, 10.0]
    assert summary["pseudo"]["root, Cityscapes"]["std"] == 0.0
    table = markdown(summary)
    assert "| pseudo | 20.0 +- 10.0 (30.0, 20.0, 10.0) | 10.0 +- 5.0 |" in table
    folders = []
    for i, run in enumerate(runs):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(run))
        folders.append(str(folder))
    results = tmp_path / "weak_labels.json"
    assert main([*folders, "--results", str(results), "--key", "seeds_x"]) == 0
    doc = json.loads(results.read_text())
    assert doc["seeds_x"]["pseudo"]["truck / bus / train, tag set"]["mean"] == 20.0
    assert any(c.startswith("python -m training.jobs.weak_only_seeds") for c in doc["commands"])
    assert main([str(tmp_path / "missing")]) == 2
