"""config/training/real_datasets.yaml: on tiny copies of the real downloads in their standard layouts,
a copy of the config with only its paths changed loads, opens every reader and trains.

The trees are what the downloads unpack to, including the files the readers must pass over
(Cityscapes' other gtFine files and test split, Vistas' instances/ and testing/, GTSDB's sign-crop
folders 00/ ... 42/ and ReadMe.txt), written by tests/dataset_files.py (cv2 / PIL, not the readers).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataset_files import (
    MIDS,
    make_cityscapes,
    make_gtsdb,
    make_tags,
    make_vistas,
    random_rgb,
    write_gray,
    write_rgb,
    write_text,
)

from training import REPO
from training.fit.config import TrainConfig, check_datasets, load_config
from training.fit.train import train

CONFIGS = REPO / "config" / "training"
REAL = CONFIGS / "real_datasets.yaml"
CITYSCAPES_TRAIN = ["aachen_000000_000019", "bochum_000000_000313"]
VISTAS_TRAINING = ["__CRT7bPhWJr8lVzv5qDyQ", "_1Gn_xkw7sa_i9GU4mkxxQ"]
GTSDB_NUMBERS = [0, 1, 599, 600, 899]  # 00600+ are the benchmark's test images
GTSDB_GT = ["00000.ppm;2;3;9;10;14", "00001.ppm;0;0;5;5;1", "00001.ppm;8;2;14;9;38", "00600.ppm;1;1;6;6;2"]
TAGS_TRAIN = ["000a1b2c3d4e5f60", "000f1e2d3c4b5a69"]
CAR, PERSON, LIGHT, TREE = MIDS  # Car, Person, Traffic light, Tree (no OpenScapes class: not a tag)


def make_downloads(data: Path) -> Path:
    """The four datasets as their downloads unpack, under ``data`` (the config's data_root)."""
    cityscapes = data / "cityscapes"  # leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip
    make_cityscapes(cityscapes, "train", CITYSCAPES_TRAIN)
    make_cityscapes(cityscapes, "val", ["frankfurt_000000_000294"], seed=5)
    make_cityscapes(cityscapes, "test", ["berlin_000000_000019"], seed=6)
    for name in ("README", "license.txt"):
        write_text(cityscapes / name, "Cityscapes\n")

    vistas = data / "vistas"  # mapillary-vistas-dataset_public_v1.2.zip
    make_vistas(vistas, "training", VISTAS_TRAINING)
    make_vistas(vistas, "validation", ["0aXcXk0NIQzxh6ZMXXfNbg"], seed=3)
    write_rgb(vistas / "testing" / "images" / "0bzbEpYVTySEB3pMIgmqNg.jpg", random_rgb(9))
    for key in VISTAS_TRAINING:  # label index * 256 + instance, 16 bit
        write_gray(vistas / "training" / "instances" / f"{key}.png", np.full((12, 16), 55 * 256 + 1, np.uint16))
    for name in ("README", "demo.py"):
        write_text(vistas / name, "Mapillary Vistas\n")

    gtsdb = data / "FullIJCNN2013"  # FullIJCNN2013.zip
    make_gtsdb(gtsdb, GTSDB_NUMBERS, GTSDB_GT)
    write_rgb(gtsdb / "14" / "00000.ppm", random_rgb(11, 8, 8))  # the benchmark's sign crops, one folder per class
    write_rgb(gtsdb / "38" / "00000.ppm", random_rgb(12, 8, 8))
    write_text(gtsdb / "ReadMe.txt", "German Traffic Sign Detection Benchmark\n")

    labels = [
        f"{TAGS_TRAIN[0]},verification,{CAR},1",
        f"{TAGS_TRAIN[0]},verification,{TREE},1",
        f"{TAGS_TRAIN[1]},verification,{PERSON},1",
        f"{TAGS_TRAIN[1]},verification,{LIGHT},1",
        f"{TAGS_TRAIN[1]},verification,{CAR},0",
    ]
    make_tags(data / "openscapes" / "train", TAGS_TRAIN, labels)
    make_tags(data / "openscapes" / "validation", ["00aa00bb00cc00dd"], [f"00aa00bb00cc00dd,verification,{CAR},1"])
    return data


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_downloads(tmp_path_factory.mktemp("real") / "data")


def user_copy(folder: Path, data_root: Path, base: Path = CONFIGS / "default.yaml") -> Path:
    """What a user with the downloads elsewhere does: the shipped file with its paths changed (the
    copy lives elsewhere too, so its base becomes an absolute path), every other line as shipped."""
    raw = yaml.safe_load(REAL.read_text(encoding="utf-8"))
    raw.update(base=str(base), data_root=str(data_root))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "real_datasets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _without_data_root(config: TrainConfig) -> dict:
    out = config.to_dict()
    out.pop("data_root")
    return out


def test_only_the_paths_change_and_every_reader_opens(downloads: Path, tmp_path: Path) -> None:
    shipped, _ = load_config(REAL, check_data=False)
    config, hierarchy = load_config(user_copy(tmp_path / "mine", downloads))  # opens and checks every reader
    assert _without_data_root(config) == _without_data_root(shipped)
    assert config.data_root == str(downloads)

    cityscapes, vistas, gtsdb, tags = check_datasets(config, hierarchy)
    assert cityscapes.sample_ids == tuple(sorted(CITYSCAPES_TRAIN))  # not val / test
    assert vistas.sample_ids == tuple(sorted(VISTAS_TRAINING)) and vistas.version == "v1.2"
    assert len(vistas.class_names) == 66  # the v1.2 table the hierarchy maps
    assert gtsdb.sample_ids == ("00000", "00001", "00599")  # the train numbering; 00600+ held out
    signs = {s.sample_id: sorted(b.label for b in s.boxes) for s in gtsdb}
    assert signs == {"00000": [14], "00001": [1, 38], "00599": []}
    assert tags.sample_ids == tuple(sorted(TAGS_TRAIN))  # openscapes/train only
    assert {s.sample_id: s.tags for s in tags} == {TAGS_TRAIN[0]: ("car",), TAGS_TRAIN[1]: ("person", "traffic light")}
    assert tags.absent_tags(1) == ("car",)
    for reader in (cityscapes, vistas):
        sample = reader[0]
        assert sample.image.shape == (12, 16, 3) and sample.label.shape == (12, 16)


def test_a_v2_download_is_read_through_its_v12_copy(downloads: Path, tmp_path: Path) -> None:
    """The v2.0 release ships the v1.2 maps as config_v1.2.json + {split}/v1.2/labels: the config's
    version v1.2 reads those, never the 124-label v2.0 maps next to them."""
    data = tmp_path / "data"
    shutil.copytree(downloads, data, ignore=shutil.ignore_patterns("vistas"))
    v12 = make_vistas(tmp_path / "v12", "training", VISTAS_TRAINING)
    vistas = data / "vistas"
    v20 = make_vistas(vistas, "training", VISTAS_TRAINING, version="v2.0", num_labels=124)
    shutil.copy(tmp_path / "v12" / "config.json", vistas / "config_v1.2.json")
    shutil.copytree(tmp_path / "v12" / "training" / "labels", vistas / "training" / "v1.2" / "labels")
    assert not (vistas / "config.json").exists() and not (vistas / "training" / "labels").exists()

    config, hierarchy = load_config(user_copy(tmp_path / "mine", data))
    reader = check_datasets(config, hierarchy)[1]
    assert (reader.version, reader.config_path.name, len(reader.class_names)) == ("v1.2", "config_v1.2.json", 66)
    sample = reader[reader.index_of(VISTAS_TRAINING[0])]
    np.testing.assert_array_equal(sample.label, v12[VISTAS_TRAINING[0]][1])
    assert not np.array_equal(sample.label, v20[VISTAS_TRAINING[0]][1])


def test_the_recipe_is_the_defaults_except_the_real_data_values() -> None:
    """Everything not about the real data (model, crops, batch mix, loss, optimiser) is default.yaml's,
    so the config follows the recipe instead of rotting into a fork of it."""
    default, _ = load_config(CONFIGS / "default.yaml", check_data=False)
    real, _ = load_config(REAL, check_data=False)
    for section in ("hierarchy", "model", "augment", "pseudo_labels", "loss", "optimizer"):
        assert real.to_dict()[section] == default.to_dict()[section], section
    mix = [(d.name, d.per_batch, d.crops) for d in real.datasets]
    assert mix == [(d.name, d.per_batch, d.crops) for d in default.datasets]
    assert real.run.device == "auto" and real.schedule.iterations >= 10 * default.schedule.iterations
    assert real.checkpoint.every < real.schedule.iterations


@pytest.mark.usefixtures("one_torch_thread")
def test_one_iteration_trains_on_the_downloads(downloads: Path, tmp_path: Path) -> None:
    config, hierarchy = load_config(user_copy(tmp_path / "mine", downloads))
    quick = config.with_overrides(
        schedule={"iterations": 1},
        run={"device": "cpu", "num_workers": 0, "out_dir": str(tmp_path / "run")},
        augment={"crop": (64, 128)},  # a CPU test: the crop size is not what can rot
    )
    result = train(quick, hierarchy, progress=False)
    assert result.iteration == 1 and (tmp_path / "run" / "last.pt").is_file()
    (losses,) = result.losses
    assert math.isfinite(losses["loss"]) and losses["loss/root"] > 0


def test_the_readme_section_describes_this_config() -> None:
    """The README's folder tree, iteration count and command are the config's."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Training on the real datasets", 1)[1].split("\n## ", 1)[0]
    config, _ = load_config(REAL, check_data=False)
    assert Path(config.data_root) == REPO / "data" / "real" and "data/real/\n" in section
    for ds in config.datasets:
        folder = "/".join([ds.root, *([ds.options["split"]] if ds.name == "openscapes" else [])])
        assert f"── {folder}/ " in section, folder
    assert f"{config.schedule.iterations:,} iterations" in section
    assert f"--config {REAL.relative_to(REPO)}" in section
