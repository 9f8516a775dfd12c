"""Dataset readers on tiny files written here in the real on-disk formats.

The writers (tests/dataset_files.py) are deliberately minimal and independent of the readers (cv2 /
PIL / plain text), so a reader that misreads a format fails these tests.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from dataset_files import (
    MIDS,
    H,
    W,
    box_row,
    cityscapes_paths,
    make_cityscapes,
    make_gtsdb,
    make_tags,
    make_vistas,
    write_gray,
)

from training.data.readers import (
    Box,
    CityscapesDataset,
    DatasetFormatError,
    GTSDBDataset,
    ImageTagsDataset,
    VistasDataset,
    load_dataset,
)
from training.data.readers.label_tables import VISTAS_V12_LABELS


def test_cityscapes_indexes_split_and_cities_sorted(tmp_path: Path) -> None:
    train_ids = ["bochum_000000_000313", "aachen_000001_000019", "aachen_000000_000019"]
    make_cityscapes(tmp_path, "train", train_ids)
    make_cityscapes(tmp_path, "val", ["frankfurt_000000_000294"])

    train = CityscapesDataset(tmp_path, "train")
    assert train.sample_ids == tuple(sorted(train_ids))
    assert len(train) == 3
    assert train.cities == ("aachen", "bochum")
    assert CityscapesDataset(tmp_path, "train").sample_ids == train.sample_ids  # stable
    assert CityscapesDataset(tmp_path, "train", cities=["bochum"]).sample_ids == ("bochum_000000_000313",)
    assert CityscapesDataset(tmp_path, "val").sample_ids == ("frankfurt_000000_000294",)
    assert train.class_names[7] == "road" and train.class_names[33] == "bicycle"
    assert len(train.class_names) == 34 and train.native_ids == frozenset(range(34))


def test_cityscapes_loads_written_image_and_label(tmp_path: Path) -> None:
    written = make_cityscapes(tmp_path, "val", ["lindau_000001_000019", "lindau_000000_000019"], seed=5)
    ds = CityscapesDataset(tmp_path, "val")
    for sample in ds:
        image, label = written[sample.sample_id]
        assert sample.dataset == "cityscapes"
        assert sample.image.dtype == np.uint8 and np.array_equal(sample.image, image)
        assert sample.label is not None and sample.label.dtype == np.uint8
        assert np.array_equal(sample.label, label)
        assert (sample.image_path, sample.label_path) == cityscapes_paths(tmp_path, "val", sample.sample_id)
        assert sample.boxes == () and sample.tags == ()
    assert ds[-1].sample_id == ds.sample_ids[1] == "lindau_000001_000019"
    assert ds.index_of("lindau_000001_000019") == 1
    with pytest.raises(IndexError):
        ds[2]


# ---------------------------------------------------------------- Vistas


def test_vistas_v12_reads_palette_indices_not_colours(tmp_path: Path) -> None:
    written = make_vistas(tmp_path, "training", ["zz9", "abc", "M0x"], seed=1)
    make_vistas(tmp_path, "validation", ["val1"])
    ds = VistasDataset(tmp_path, "training")
    assert ds.version == "v1.2" and ds.config_path == tmp_path / "config.json"
    assert ds.sample_ids == tuple(sorted(written))
    assert ds.class_names == tuple(lab.name for lab in VISTAS_V12_LABELS)
    assert ds.native_ids == frozenset(range(66))
    for sample in ds:
        image, label = written[sample.sample_id]
        assert sample.dataset == "vistas"
        assert sample.label is not None and sample.label.dtype == np.uint8 and sample.label.ndim == 2
        assert np.array_equal(sample.label, label)
        assert sample.image.shape == (H, W, 3)
        assert np.abs(sample.image.astype(int) - image).max() <= 3  # JPEG, flat colours
    assert VistasDataset(tmp_path, "validation").sample_ids == ("val1",)


def test_vistas_v20_layout_detected_and_selected(tmp_path: Path) -> None:
    v2 = make_vistas(tmp_path, "validation", ["k1", "k2"], version="v2.0", num_labels=124, seed=3)
    ds = VistasDataset(tmp_path, "validation")
    assert ds.version == "v2.0" and len(ds.class_names) == 124
    assert ds.class_names[123] == "v2.0label-123"
    assert all(np.array_equal(s.label, v2[s.sample_id][1]) for s in ds)
    assert VistasDataset(tmp_path, "validation", version="2.0").version == "v2.0"

    # Both layouts present (as in the v2.0 release): v1.2 by default, v2.0 on request.
    v1 = make_vistas(tmp_path, "validation", ["k1", "k2"], version="v1.2", seed=3)
    assert not np.array_equal(v1["k1"][1], v2["k1"][1])
    default = VistasDataset(tmp_path, "validation")
    assert default.version == "v1.2" and len(default.class_names) == 66
    assert np.array_equal(default[0].label, v1["k1"][1])
    chosen = VistasDataset(tmp_path, "validation", version="v2.0")
    assert np.array_equal(chosen[0].label, v2["k1"][1])
    with pytest.raises(ValueError, match="version"):
        VistasDataset(tmp_path, "validation", version="3.0")


def test_vistas_accepts_greyscale_label_png(tmp_path: Path) -> None:
    written = make_vistas(tmp_path, "training", ["a"])
    write_gray(tmp_path / "training" / "labels" / "a.png", written["a"][1])
    assert np.array_equal(VistasDataset(tmp_path)[0].label, written["a"][1])


# ---------------------------------------------------------------- GTSDB


def test_gtsdb_boxes_images_without_signs_and_splits(tmp_path: Path) -> None:
    lines = [
        "00000.ppm;1;2;5;6;13",
        "00700.ppm;0;0;15;11;42",
        "00000.ppm;8;3;12;9;0",
    ]
    written = make_gtsdb(tmp_path, [700, 0, 1, 2], lines, seed=9)
    ds = GTSDBDataset(tmp_path)
    assert ds.sample_ids == ("00000", "00001", "00002", "00700")
    assert ds.class_names[14] == "stop" and ds.native_ids == frozenset(range(43))
    by_id = {s.sample_id: s for s in ds}
    assert by_id["00000"].boxes == (Box(1, 2, 5, 6, 13), Box(8, 3, 12, 9, 0))
    assert by_id["00700"].boxes == (Box(0, 0, 15, 11, 42),)
    assert by_id["00001"].boxes == () and by_id["00002"].boxes == ()
    for sample_id, sample in by_id.items():
        assert sample.dataset == "gtsdb" and sample.label is None
        assert np.array_equal(sample.image, written[sample_id])  # PPM is lossless: exact RGB
        assert sample.label_path == tmp_path / "gt.txt"

    assert GTSDBDataset(tmp_path, split="train").sample_ids == ("00000", "00001", "00002")
    assert GTSDBDataset(tmp_path, split="test").sample_ids == ("00700",)
    picked = GTSDBDataset(tmp_path, image_ids=[700, "00001"])
    assert picked.sample_ids == ("00001", "00700")
    assert picked[1].boxes == (Box(0, 0, 15, 11, 42),)


def test_gtsdb_splits_follow_the_real_numbering(tmp_path: Path) -> None:
    make_gtsdb(tmp_path, [0, 599, 600, 899], [])
    assert GTSDBDataset(tmp_path, split="train").sample_ids == ("00000", "00599")
    assert GTSDBDataset(tmp_path, split="test").sample_ids == ("00600", "00899")
    with pytest.raises(ValueError, match="unknown GTSDB split 'val'"):
        GTSDBDataset(tmp_path, split="val")


# ---------------------------------------------------------------- image-level tags


def test_image_tags_positive_absent_vocabulary_and_boxes(tmp_path: Path) -> None:
    rows = [
        "img_b,verification,/m/0k4j,1",
        "img_b,verification,/m/01g317,0",  # verified absent: never a tag
        "img_b,verification,/m/07j7r,1",  # Tree: not an OpenScapes class
        "img_a,verification,/m/015qff,1",
        "img_a,crowdsource-verification,/m/015qff,1",  # duplicate positive
        "img_a,verification,/m/0k4j,0",
    ]
    boxes = [box_row("img_b", "/m/0k4j", 2, 3, 9, 7), box_row("img_b", "/m/01g317", 0, 0, 15, 11)]
    written = make_tags(tmp_path, ["img_b", "img_a", "img_c"], rows, boxes)
    write_gray(tmp_path / "ground_truth" / "img_a_signs.png", np.full((H, W), 255, np.uint8))  # ignored

    ds = ImageTagsDataset(tmp_path)
    assert ds.sample_ids == ("img_a", "img_b", "img_c")
    assert "traffic light" in ds.class_names and len(ds.class_names) == 14
    a, b, c = ds
    assert a.tags == ("traffic light",) and ds.absent_tags(0) == ("car",)
    assert b.tags == ("car",) and ds.absent_tags(1) == ("person",)
    assert c.tags == () and c.boxes == () and ds.absent_tags(2) == ()
    assert b.boxes == (Box(2, 3, 9, 7, "car"), Box(0, 0, W - 1, H - 1, "person"))
    for sample in ds:
        assert sample.dataset == "openscapes" and sample.label is None
        assert np.abs(sample.image.astype(int) - written[sample.sample_id]).max() <= 3

    everything = ImageTagsDataset(tmp_path, vocabulary=None)
    assert everything[1].tags == ("car", "tree")
    assert set(everything.class_names) == {name.lower() for name in MIDS.values()}


def test_image_tags_split_subfolder_and_no_boxes_file(tmp_path: Path) -> None:
    make_tags(tmp_path / "validation", ["x1"], ["x1,verification,/m/01g317,1"])
    ds = ImageTagsDataset(tmp_path, split="validation")
    assert ds.sample_ids == ("x1",) and ds[0].tags == ("person",) and ds[0].boxes == ()


# ---------------------------------------------------------------- factory and error type


def test_load_dataset_by_hierarchy_name(tmp_path: Path) -> None:
    make_cityscapes(tmp_path / "cs", "val", ["ulm_000000_000019"])
    make_vistas(tmp_path / "mv", "validation", ["k"])
    make_gtsdb(tmp_path / "gt", [3], [])
    make_tags(tmp_path / "os", ["i"], [])
    readers = {
        "cityscapes": load_dataset("cityscapes", tmp_path / "cs", split="val"),
        "vistas": load_dataset("vistas", tmp_path / "mv", split="validation"),
        "gtsdb": load_dataset("gtsdb", tmp_path / "gt"),
        "openscapes": load_dataset("openscapes", tmp_path / "os"),
    }
    for name, ds in readers.items():
        assert ds.name == name and len(ds) == 1 and ds[0].dataset == name
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        load_dataset("kitti", tmp_path)


def test_format_error_names_file_and_line_and_pickles(tmp_path: Path) -> None:
    error = DatasetFormatError(tmp_path / "gt.txt", "bad", line=7)
    assert str(error) == f"{tmp_path / 'gt.txt'}:7: bad"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, str(copy)) == (error.path, 7, str(error))
    assert isinstance(copy, ValueError)
