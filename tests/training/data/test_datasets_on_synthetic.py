"""The readers on data the synthetic generator wrote: every file reads back as what was rendered.

This closes the loop between the writers (training/data/synthetic) and the readers
(training/data/readers): both follow docs/DATASET_FORMATS.md, and a disagreement shows up here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.data.readers import load_dataset
from training.data.readers.label_tables import OPENSCAPES_TAGS, VISTAS_V12_ID
from training.data.synthetic import (
    CITYSCAPES_FROM_VISTAS,
    generate,
    iter_scenes,
    plan_tasks,
    render_scene,
    task_style,
    write_gtsdb,
)
from training.fit.config import load_config
from training.jobs.main_job import read_back


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, "small", seed=3, workers=1)
    return root


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_cityscapes_images_and_labels_are_the_rendered_scenes(data: Path):
    scenes = {_digest(scene.image): scene for _, scene in iter_scenes("cityscapes", "small", seed=3)}
    samples = [s for split in ("train", "val") for s in load_dataset("cityscapes", data / "cityscapes", split=split)]
    assert len(samples) == len(scenes)
    for sample in samples:
        scene = scenes[_digest(sample.image)]  # PNG is lossless: the exact rendered image
        np.testing.assert_array_equal(sample.label, CITYSCAPES_FROM_VISTAS[scene.labels])


def test_vistas_labels_are_palette_indices_of_the_truth(data: Path):
    truths = {_digest(scene.labels): scene for _, scene in iter_scenes("vistas", "small", seed=3)}
    reader = load_dataset("vistas", data / "vistas", split="training")
    assert len(reader.labels) == 66 and reader.labels[65].name == "void--unlabeled"
    for sample in reader:
        scene = truths[_digest(sample.label)]
        assert sample.image.shape == scene.image.shape  # JPEG: same size, lossy pixels
        assert np.abs(sample.image.astype(int) - scene.image).mean() < 12


def _side(box) -> int:
    """Longer side of an inclusive box, the size the benchmark's 16-128 px range refers to."""
    return max(box[2] - box[0], box[3] - box[1]) + 1


def test_gtsdb_boxes_are_the_visible_front_signs(data: Path):
    """Every visible front sign of the annotated size (3-26 px in these 272 px images) is a box."""
    scenes = {_digest(scene.image): scene for _, scene in iter_scenes("gtsdb", "small", seed=3)}
    reader = load_dataset("gtsdb", data / "gtsdb")
    without = 0
    for sample in reader:
        scene = scenes[_digest(sample.image)]  # PPM is lossless
        expected = sorted(
            (*inst.bbox, inst.gtsdb_class)
            for inst in scene.instances
            if inst.label == VISTAS_V12_ID["object--traffic-sign--front"] and inst.area > 0
            and 3 <= _side(inst.bbox) <= 26
        )  # fmt: skip
        got = sorted((b.x0, b.y0, b.x1, b.y1, b.label) for b in sample.boxes)
        assert got == expected
        without += not got
    assert 0 < without < len(reader)  # images without signs exist, and are the exception


@pytest.fixture(scope="module")
def large_gtsdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A moderate sample of the ``large`` GTSDB set (its first 8 train and 2 test scenes, 1360x800 like
    the benchmark) written by the GTSDB writer; the whole set is 660 images."""
    tasks = plan_tasks("gtsdb", "large", 0)
    picked = [t for t in tasks if t.split == "train"][:8] + [t for t in tasks if t.split == "test"][:2]
    root = tmp_path_factory.mktemp("gtsdb_large")
    write_gtsdb(root, [(t.split, render_scene(t.height, t.width, t.seed, task_style(t))) for t in picked])
    return root


def test_large_gtsdb_box_sizes_are_the_benchmarks(large_gtsdb: Path):
    """Read by the real reader: 1360x800 images, boxes of 16-128 px, median ~38 px, p10 ~23 px."""
    samples = list(load_dataset("gtsdb", large_gtsdb))
    assert len(samples) == 10 and {s.image.shape for s in samples} == {(800, 1360, 3)}
    sides = np.array([_side((b.x0, b.y0, b.x1, b.y1)) for s in samples for b in s.boxes])
    assert sides.size > 100  # over ten per image: the 600 train images hold hundreds per class
    assert sides.min() >= 16 and sides.max() <= 128
    assert abs(np.median(sides) - 38) <= 4 and abs(np.percentile(sides, 10) - 23) <= 3
    assert len({b.label for s in samples for b in s.boxes}) > 30


def test_large_gtsdb_splits_follow_the_benchmark(large_gtsdb: Path):
    test = load_dataset("gtsdb", large_gtsdb, split="test")
    assert test.sample_ids == ("00600", "00601")
    assert load_dataset("gtsdb", large_gtsdb, split="train").sample_ids == tuple(f"{i:05d}" for i in range(8))


def test_openscapes_tags_come_from_the_vocabulary(data: Path):
    reader = load_dataset("openscapes", data / "openscapes")
    assert len(reader) > 0
    seen = set()
    for sample in reader:
        assert set(sample.tags) <= set(OPENSCAPES_TAGS)
        seen |= set(sample.tags)
        assert (data / "openscapes" / "ground_truth" / f"{sample.sample_id}_vistas.png").is_file()
    assert {"car", "person", "traffic sign"} <= seen


def test_every_sample_gives_iv2018_targets(data: Path):
    results = read_back(data, load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml"))
    assert [r.dataset for r in results] == ["cityscapes", "cityscapes", "vistas", "vistas", "gtsdb", "openscapes"]
    assert all(r.samples > 0 for r in results)
    assert all(r.labelled_pixels > 0 for r in results if r.dataset != "openscapes")
    assert sum(r.boxes for r in results if r.dataset == "gtsdb") > 0
    # Weak tags never train the root: under iv2018 only tags below the root (stop sign) teach
    # anything; under iv2019 every vehicle / person tag reaches its sub-classifier.
    iv2019 = read_back(data, load_hierarchy(REPO / "config" / "hierarchies" / "iv2019.yaml"))
    assert next(r for r in iv2019 if r.dataset == "openscapes").labelled_pixels > 0


def test_main_job_command_generates_and_reads_back(tmp_path: Path):
    result = subprocess.run(
        [
            *(sys.executable, "-m", "training.jobs.main_job", "--data", str(tmp_path / "d"), "--preset", "small"),
            *("--workers", "1", "--out", str(tmp_path / "out"), "--until", "readback"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "reading every sample back" in result.stdout and "done: datasets in" in result.stdout
    for name in ("cityscapes", "vistas", "gtsdb", "openscapes"):
        assert (tmp_path / "d" / name / "synthetic.json").is_file()


def test_gtsdb_splits_are_the_generated_splits(tmp_path: Path):
    """The reader's train / test splits hold for a generated set: disjoint, covering, the rendered splits;
    no training config reads a test image."""
    generate(tmp_path, "small", seed=0, only=["gtsdb"])
    root = tmp_path / "gtsdb"
    train, test = (load_dataset("gtsdb", root, split=split).sample_ids for split in ("train", "test"))
    assert train and test and not set(train) & set(test)
    assert sorted(train + test) == list(load_dataset("gtsdb", root).sample_ids)
    members = json.loads((root / "synthetic.json").read_text())["split_members"]
    assert {"train": train, "test": test} == {
        s: tuple(sorted(n.removesuffix(".ppm") for n in members[s])) for s in members
    }
    # The held-out scenes that sign evaluation re-renders (training.evaluation.signs) are the test split's images.
    held_out = {_digest(scene.image) for task, scene in iter_scenes("gtsdb", "small", 0) if task.split == "test"}
    assert {_digest(sample.image) for sample in load_dataset("gtsdb", root, split="test")} == held_out
    for path in sorted((REPO / "config" / "training").glob("*.yaml")):
        config, _ = load_config(path, check_data=False)
        for ds in config.datasets:
            if ds.name == "gtsdb":
                trained = load_dataset("gtsdb", root, **ds.options).sample_ids
                assert not set(trained) & set(test), f"{path.name} trains on GTSDB test images"
