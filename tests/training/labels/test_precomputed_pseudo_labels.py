"""Precomputed pseudo labels in training: the ``pseudo_labels.precomputed`` config key,
targets read from the generator's files, a tiny training run, a missing label file, the iv2019 use of
an iv2018 tag classifier (outputs matched through the tag names) and the weak-label experiment plumbing.

Data: the synthetic "small" preset (real on-disk formats); labels: written by the real generator
(``generate_labels``) with a tiny random tag classifier, CAM-only stages (fast; the labels' content
does not matter here except where a test writes a known label itself).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tiny_training import HIERARCHIES, make_tiny_data, tiny_config, write_config

from hiseg_ros.hierarchy import IGNORE, load_hierarchy
from training.data.augment import AugmentConfig
from training.data.readers import load_dataset
from training.fit.batches import make_sample
from training.fit.config import ConfigError, load_config
from training.fit.train import train
from training.jobs import experiments
from training.labels.node_distribution import PseudoLabelError
from training.labels.pseudo_labels.batch import SETTINGS_FILE, generate_labels, split_ids
from training.labels.pseudo_labels.classifier import (
    RetargetedClassifier,
    TagClassifier,
    TrainConfig,
    classifier_for_hierarchy,
    hierarchy_tags,
    load_classifier,
    save_classifier,
    tag_node_space,
)
from training.labels.pseudo_labels.precomputed import PrecomputedSource
from training.labels.targets import TargetBuilder

IV2018 = HIERARCHIES / "iv2018.yaml"
IV2019 = HIERARCHIES / "iv2019.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("precomputed_data"))


@pytest.fixture(scope="module")
def iv2018_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tag classifier whose outputs are iv2018 nodes and which records no tag map (like
    ``runs/pseudo_labels/classifier_probe.pt``)."""
    torch.manual_seed(0)
    nodes = tag_node_space(load_hierarchy(IV2018), "openscapes")
    model = TagClassifier(nodes, TrainConfig(input_size=(32, 48), pretrained=None, freeze_blocks=0))
    path = tmp_path_factory.mktemp("clf") / "tags.pt"
    save_classifier(model, path)
    return path


def _settings(classifier: Path) -> dict:
    return {
        "classifier": str(classifier),
        "classifier_hierarchy": str(IV2018),
        "stages": {"saliency": False, "erasing": False, "crf": False},
        "work_max_side": 48,
    }


@pytest.fixture(scope="module")
def labels_iv2019(data_root: Path, iv2018_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pseudo labels of every tiny OpenScapes image for iv2019, from the iv2018 classifier."""
    out = tmp_path_factory.mktemp("labels") / "iv2019_hard"
    report = generate_labels(
        "openscapes", data_root / "openscapes", IV2019, _settings(iv2018_classifier), out, workers=1, progress=False
    )
    assert report.done == len(load_dataset("openscapes", data_root / "openscapes")), report.summary()
    return out


def _iv2019_config(data_root: Path, out_dir: Path, precomputed: dict | None, **sections) -> dict:
    raw = tiny_config(data_root, out_dir, **sections)
    raw["hierarchy"] = str(IV2019)
    raw["datasets"] = [d for d in raw["datasets"] if d["name"] != "gtsdb"]
    raw["schedule"] = {"iterations": 2}
    if precomputed is not None:
        raw["pseudo_labels"] = {"precomputed": precomputed}
    return raw


def _error(tmp_path: Path, raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "cfg.yaml", raw), check_data=False)
    return str(info.value)


# --------------------------------------------------------------------------- config validation
def test_config_errors_name_the_key(data_root: Path, labels_iv2019: Path, tmp_path: Path) -> None:
    def err(precomputed: dict, hierarchy: Path = IV2019) -> str:
        raw = _iv2019_config(data_root, tmp_path / "o", precomputed)
        raw["hierarchy"] = str(hierarchy)
        return _error(tmp_path, raw)

    good = {"dir": str(labels_iv2019)}
    msg = err({"gtsdb": good})
    assert "pseudo_labels.precomputed.gtsdb: dataset 'gtsdb' is not one of the config's datasets" in msg
    msg = err({"cityscapes": good})
    assert "pseudo_labels.precomputed.cityscapes:" in msg and "'pixel' supervision" in msg
    msg = err({"openscapes": {"dir": str(tmp_path / "nowhere")}})
    assert "pseudo_labels.precomputed.openscapes.dir: no such folder" in msg
    (tmp_path / "empty").mkdir()
    msg = err({"openscapes": {"dir": str(tmp_path / "empty")}})
    assert "pseudo_labels.precomputed.openscapes.dir:" in msg and f"has no {SETTINGS_FILE}" in msg
    msg = err({"openscapes": {**good, "output": "medium"}})
    assert "pseudo_labels.precomputed.openscapes.output: expected one of ['hard', 'soft'], got 'medium'" in msg
    msg = err({"openscapes": {**good, "output": "soft"}})  # the folder holds hard (PNG) labels
    assert "pseudo_labels.precomputed.openscapes.output:" in msg and "records output 'hard'" in msg
    msg = err({"openscapes": {**good, "outptu": "hard"}})
    assert "pseudo_labels.precomputed.openscapes.outptu: unknown key" in msg
    msg = err({"openscapes": {"output": "hard"}})
    assert "pseudo_labels.precomputed.openscapes.dir: missing required key" in msg
    msg = err({"openscapes": "labels/"})
    assert "pseudo_labels.precomputed.openscapes: expected a mapping" in msg
    msg = err({"openscapes": good}, hierarchy=IV2018)  # labels hold iv2019 class ids
    assert "pseudo_labels.precomputed.openscapes:" in msg and "made with hierarchy 'iv2019'" in msg
    assert msg.startswith(str(tmp_path / "cfg.yaml"))


def test_settings_recording_only_a_hierarchy_path_are_compared_by_loading_it(
    data_root: Path, labels_iv2019: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old_labels"
    shutil.copytree(labels_iv2019, old)
    settings = json.loads((old / SETTINGS_FILE).read_text())
    for key in ("hierarchy_sha256", "hierarchy_name"):  # what the generator wrote before recording them
        settings.pop(key)
    settings["hierarchy"] = str(IV2018)
    (old / SETTINGS_FILE).write_text(json.dumps(settings))
    msg = _error(tmp_path, _iv2019_config(data_root, tmp_path / "o", {"openscapes": {"dir": str(old)}}))
    assert "made with hierarchy 'iv2018'" in msg
    settings["hierarchy"] = str(IV2019)
    (old / SETTINGS_FILE).write_text(json.dumps(settings))
    ok = _iv2019_config(data_root, tmp_path / "o", {"openscapes": {"dir": str(old)}})
    load_config(write_config(tmp_path / "ok.yaml", ok), check_data=False)


def test_relative_dir_is_resolved_against_the_config_file(data_root: Path, labels_iv2019: Path, tmp_path: Path) -> None:
    shutil.copytree(labels_iv2019, tmp_path / "cfgdir" / "labels")
    raw = _iv2019_config(data_root, tmp_path / "o", {"openscapes": {"dir": "labels"}})
    config, hierarchy = load_config(write_config(tmp_path / "cfgdir" / "c.yaml", raw), check_data=False)
    assert config.precomputed_labels == {"openscapes": PrecomputedSource(str(tmp_path / "cfgdir" / "labels"), "hard")}
    assert config.to_dict()["pseudo_labels"]["precomputed"] == {
        "openscapes": {"dir": str(tmp_path / "cfgdir" / "labels"), "output": "hard"}
    }
    generators = config.pseudo_label_generators(hierarchy)
    assert set(generators) == {"openscapes"} and generators["openscapes"].label_dir == tmp_path / "cfgdir" / "labels"
    plain_raw = _iv2019_config(data_root, tmp_path / "o", None)
    plain, _ = load_config(write_config(tmp_path / "plain.yaml", plain_raw), check_data=False)
    assert plain.precomputed_labels == {} and plain.pseudo_label_generators(hierarchy) == {}


# --------------------------------------------------------------------------- targets from the files
def _known_labels(labels: Path, tmp_path: Path, data_root: Path) -> tuple[Path, str]:
    """A copy of ``labels`` whose first image's label is 'car' on its top half, void below."""
    hierarchy = load_hierarchy(IV2019)
    folder = tmp_path / "known"
    shutil.copytree(labels, folder)
    reader = load_dataset("openscapes", data_root / "openscapes")
    sample = reader[0]
    h, w = sample.image.shape[:2]
    ids = np.full((h, w), hierarchy.void_value, np.uint8)
    ids[: h // 2] = hierarchy.node("car").id
    cv2.imwrite(str(folder / f"{sample.sample_id}.png"), ids)
    return folder, sample.sample_id


def test_target_builder_from_config_reads_the_label_files(data_root: Path, labels_iv2019: Path, tmp_path: Path) -> None:
    folder, sample_id = _known_labels(labels_iv2019, tmp_path, data_root)
    raw = _iv2019_config(data_root, tmp_path / "o", {"openscapes": {"dir": str(folder)}})
    config, hierarchy = load_config(write_config(tmp_path / "c.yaml", raw), check_data=False)
    builder = TargetBuilder(hierarchy, config.pseudo_labels, config.pseudo_label_generators(hierarchy))
    reader = load_dataset("openscapes", data_root / "openscapes")
    sample = reader[reader.index_of(sample_id)]
    targets = builder(sample)
    h = sample.image.shape[0]
    car = hierarchy.classifier("vehicle").classes.index("car")
    vehicle = targets.hard["vehicle"]
    top, bottom = vehicle[: h // 2], vehicle[h // 2 :]
    assert (bottom == IGNORE).all()  # void in the file
    assert (top == car).all()  # one hard class where the file says car
    assert (targets.hard.get("root", np.full(1, IGNORE)) == IGNORE).all()  # weak data never trains the root
    # in training, the full-image label is warped like the image into the crop (nearest, void outside)
    augment = AugmentConfig((64, 96), (1.0, 1.0), None, False, 0.0, 0.0)
    image, crop_targets = make_sample(
        reader, reader.index_of(sample_id), "tags", augment, builder, np.random.default_rng(0)
    )
    assert image.shape[:2] == (64, 96) and crop_targets.hard["vehicle"].shape == (64, 96)
    assert set(np.unique(crop_targets.hard["vehicle"]).tolist()) <= {car, IGNORE}


# --------------------------------------------------------------------------- training
def test_tiny_training_with_precomputed_labels(data_root: Path, labels_iv2019: Path, tmp_path: Path) -> None:
    raw = _iv2019_config(data_root, tmp_path / "run", {"openscapes": {"dir": str(labels_iv2019)}})
    config, hierarchy = load_config(write_config(tmp_path / "c.yaml", raw))
    result = train(config, hierarchy, progress=False)
    assert result.iteration == 2 and result.checkpoint is not None and result.checkpoint.is_file()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert str(labels_iv2019) in saved


def test_missing_label_file_names_the_file_from_a_loader_worker(
    data_root: Path, labels_iv2019: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incomplete"
    folder.mkdir()
    shutil.copy(labels_iv2019 / SETTINGS_FILE, folder / SETTINGS_FILE)  # settings, but no label file at all
    raw = _iv2019_config(data_root, tmp_path / "run", {"openscapes": {"dir": str(folder)}}, run={"num_workers": 1})
    config, hierarchy = load_config(write_config(tmp_path / "c.yaml", raw))
    with pytest.raises(PseudoLabelError) as info:
        train(config, hierarchy, progress=False)
    message = str(info.value)
    assert "DataLoader worker" in message  # raised inside the worker, re-raised with its type and text
    assert re.search(re.escape(str(folder)) + r"/\w+\.png: no precomputed pseudo label", message), message


# --------------------------------------------------------------------------- iv2018 classifier for iv2019
def test_iv2018_classifier_answers_for_iv2019_through_the_tag_names(iv2018_classifier: Path) -> None:
    iv2018, iv2019 = load_hierarchy(IV2018), load_hierarchy(IV2019)
    model = load_classifier(iv2018_classifier)
    assert model.tags is None  # like the shipped probe checkpoint
    with pytest.raises(ValueError, match=r"lack nodes \['train'\].*--classifier-hierarchy"):
        classifier_for_hierarchy(model, iv2019, "openscapes")
    assert classifier_for_hierarchy(model, iv2018, "openscapes") is model  # same names: used as it is
    adapted = classifier_for_hierarchy(model, iv2019, "openscapes", hierarchy_tags(iv2018, "openscapes"))
    assert isinstance(adapted, RetargetedClassifier)
    assert adapted.groups["train"] == ("on-rails",) and adapted.groups["car"] == ("car",)
    assert adapted.groups["traffic-sign"] == ("traffic-sign", "sign-stop")  # iv2019 merges stop signs
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    cams = adapted.attention(image, ["traffic-sign", "train"], (30, 40))
    raw = model.attention(image, ["traffic-sign", "sign-stop", "on-rails"], (30, 40))
    np.testing.assert_allclose(cams[0], np.maximum(raw[0], raw[1]), atol=1e-6)
    np.testing.assert_allclose(cams[1], raw[2], atol=1e-6)
    # a checkpoint that records its tag map needs no flag
    model.tags = hierarchy_tags(iv2018, "openscapes")
    assert isinstance(classifier_for_hierarchy(model, iv2019, "openscapes"), RetargetedClassifier)


def test_generated_settings_record_the_hierarchy(labels_iv2019: Path) -> None:
    settings = json.loads((labels_iv2019 / SETTINGS_FILE).read_text())
    assert settings["hierarchy_name"] == "iv2019" and len(settings["hierarchy_sha256"]) == 64
    assert settings["generator"]["classifier_hierarchy"] == str(IV2018)


# --------------------------------------------------------------------------- the experiment
def test_experiment_variants_configs_and_tables(data_root: Path, labels_iv2019: Path, tmp_path: Path) -> None:
    view = experiments.tag_split_view(data_root, "train", tmp_path / "_data")
    train_ids = sorted(split_ids(data_root / "openscapes", "train"))
    full = load_dataset("openscapes", data_root / "openscapes")
    viewed = load_dataset("openscapes", view)
    assert sorted(viewed.sample_ids) == sorted(train_ids) and len(viewed) < len(full)
    for i, sid in enumerate(viewed.sample_ids):
        assert viewed[i].tags == full[full.index_of(sid)].tags
    assert experiments.tag_split_view(data_root, "train", tmp_path / "_data") == view  # rebuildable

    old = experiments.variant_config(experiments.VARIANTS["pixel_boxes_tags"], data_root, 3, (64, 128), tmp_path / "a")
    assert "precomputed" not in old["pseudo_labels"] and "drivable" in old["loss"]["weights"]
    assert [d["root"] for d in old["datasets"] if d["name"] == "openscapes"] == ["openscapes"]
    for name in ("tags_uniform_iv2019", "tags_pseudo_iv2019"):
        variant = experiments.VARIANTS[name]
        raw = experiments.variant_config(variant, data_root, 2, (64, 128), tmp_path / name, view, labels_iv2019)
        assert raw["loss"]["weights"] == {"root": 1.0, "human": 0.1, "vehicle": 0.1}
        assert [d["name"] for d in raw["datasets"]] == ["cityscapes", "vistas", "openscapes"]
        assert raw["datasets"][-1]["root"] == str(view)
        config, hierarchy = load_config(write_config(tmp_path / f"{name}.yaml", raw))
        assert hierarchy.name == "iv2019"
        assert bool(config.precomputed_labels) == (name == "tags_pseudo_iv2019")
    assert experiments.missing_pseudo_labels(labels_iv2019, train_ids) == []
    assert experiments.missing_pseudo_labels(tmp_path, train_ids[:2]) == train_ids[:2]
    assert experiments.resolves_sign_classes(load_hierarchy(IV2018))
    assert not experiments.resolves_sign_classes(load_hierarchy(IV2019))

    def result(classifiers: dict) -> dict:
        signs = {"miou": 0.1, "pixel_accuracy": 0.5}
        return {"classifiers": classifiers, "datasets": {"cityscapes": 0.3}, "signs": signs, "train_seconds": 9}

    legacy = {"pixel": result({"root": 0.5, "drivable": 0.2, "rider": 0.1, "traffic_sign": 0.4})}
    weak = {"tags_uniform_iv2019": result({"root": 0.5, "human": 0.25, "vehicle": 0.125})}
    assert experiments.results_tables(legacy) == experiments.results_table(legacy)  # unchanged for IV 2018
    tables = experiments.results_tables(legacy | weak).split("\n\n")
    assert tables[0] == experiments.results_table(legacy)
    assert tables[1].splitlines()[0] == "| variant | root | human | vehicle | Cityscapes | Vistas | train s |"
    assert tables[1].splitlines()[2] == "| tags_uniform_iv2019 | 50.0 | 25.0 | 12.5 | 30.0 | - | 9 |"
