"""Dataset readers on tiny files written here in the real on-disk formats.

The writers below are deliberately minimal and independent of the readers (cv2 /
PIL / plain text), so a reader that misreads a format fails these tests.
test_datasets_errors.py reuses them for the broken-file cases.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.datasets import (
    Box,
    CityscapesDataset,
    DatasetFormatError,
    GTSDBDataset,
    ImageTagsDataset,
    VistasDataset,
    load_dataset,
)
from training.datasets.label_tables import VISTAS_V12_LABELS

H, W = 12, 16  # image size of every written sample: small keeps the suite fast

# ---------------------------------------------------------------- writers


def random_rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def block_rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Two flat colour halves: survives JPEG closely, and shows swapped channels or flips."""
    rng = np.random.default_rng(seed)
    image = np.empty((h, w, 3), np.uint8)
    image[:, : w // 2] = rng.integers(0, 256, 3)
    image[:, w // 2 :] = rng.integers(0, 256, 3)
    return image


def write_rgb(path: Path, rgb: np.ndarray, quality: int = 100) -> Path:
    """PNG / JPEG / PPM (by extension) from an RGB array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = []
    if path.suffix == ".jpg":  # 4:4:4 so flat colour halves do not bleed into each other
        params = [
            cv2.IMWRITE_JPEG_QUALITY,
            quality,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ]
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return path


def write_gray(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values)
    return path


def write_palette_png(path: Path, indices: np.ndarray, colors: list[tuple[int, int, int]]) -> Path:
    """Vistas-style 'P' mode PNG whose palette maps each index to its class colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.astype(np.uint8).tobytes())
    palette = [c for color in colors for c in color]
    image.putpalette(palette + [0] * (768 - len(palette)))  # full 256 entries: 8-bit PNG, any index kept
    image.save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Cityscapes -------------------------------------------------------------


def cityscapes_paths(root: Path, split: str, sample_id: str) -> tuple[Path, Path]:
    city = sample_id.split("_")[0]
    return (
        root / "leftImg8bit" / split / city / f"{sample_id}_leftImg8bit.png",
        root / "gtFine" / split / city / f"{sample_id}_gtFine_labelIds.png",
    )


def make_cityscapes(root: Path, split: str, sample_ids: list[str], seed: int = 0) -> dict[str, tuple]:
    """Write image + labelIds (+ the other gtFine files the reader must ignore)."""
    written = {}
    for k, sample_id in enumerate(sample_ids):
        image = random_rgb(seed + k)
        label = np.random.default_rng(100 + seed + k).integers(0, 34, (H, W), dtype=np.uint8)
        image_path, label_path = cityscapes_paths(root, split, sample_id)
        write_rgb(image_path, image)
        write_gray(label_path, label)
        gt_dir = label_path.parent
        write_gray(gt_dir / f"{sample_id}_gtFine_instanceIds.png", label.astype(np.uint16) * 1000)
        write_rgb(gt_dir / f"{sample_id}_gtFine_color.png", image)
        write_text(gt_dir / f"{sample_id}_gtFine_polygons.json", '{"imgHeight": 12, "imgWidth": 16, "objects": []}')
        written[sample_id] = (image, label)
    return written


# Vistas -------------------------------------------------------------------


def vistas_config(num_labels: int | None = None, prefix: str = "") -> dict:
    """config.json content: the real v1.2 table, or ``num_labels`` made-up entries (v2.0 tests)."""
    if num_labels is None:
        labels = [
            {"name": lab.name, "readable": lab.readable, "color": list(lab.color), "instances": lab.instances,
             "evaluate": lab.evaluate}
            for lab in VISTAS_V12_LABELS
        ]  # fmt: skip
    else:
        labels = [
            {"name": f"{prefix}label-{i}", "readable": f"L{i}", "color": [i, 255 - i, (7 * i) % 256],
             "instances": False, "evaluate": True}
            for i in range(num_labels)
        ]  # fmt: skip
    return {"labels": labels, "version": "test"}


def make_vistas(
    root: Path,
    split: str,
    keys: list[str],
    version: str = "v1.2",
    num_labels: int | None = None,
    seed: int = 0,
) -> dict[str, tuple]:
    config = vistas_config(num_labels, prefix=version)
    colors = [tuple(lab["color"]) for lab in config["labels"]]
    config_name, label_dir = {
        "v1.2": ("config.json", root / split / "labels"),
        "v2.0": ("config_v2.0.json", root / split / "v2.0" / "labels"),
    }[version]
    write_text(root / config_name, json.dumps(config))
    written = {}
    for k, key in enumerate(keys):
        image = block_rgb(seed + k)
        label = np.random.default_rng(200 + seed + k).integers(0, len(colors), (H, W), dtype=np.uint8)
        write_rgb(root / split / "images" / f"{key}.jpg", image)
        write_palette_png(label_dir / f"{key}.png", label, colors)
        written[key] = (image, label)
    return written


# GTSDB --------------------------------------------------------------------


def make_gtsdb(root: Path, numbers: list[int], lines: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    written = {}
    for k, number in enumerate(numbers):
        image = random_rgb(seed + k)
        write_rgb(root / f"{number:05d}.ppm", image)
        written[f"{number:05d}"] = image
    write_text(root / "gt.txt", "".join(f"{line}\n" for line in lines))
    return written


# Open Images style tags ------------------------------------------------------

MIDS = {"/m/0k4j": "Car", "/m/01g317": "Person", "/m/015qff": "Traffic light", "/m/07j7r": "Tree"}
LABELS_HEADER = "ImageID,Source,LabelName,Confidence"
BOXES_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
)


def make_tags(
    base: Path, image_ids: list[str], label_rows: list[str], box_rows: list[str] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    written = {}
    for k, image_id in enumerate(image_ids):
        written[image_id] = block_rgb(seed + k)
        write_rgb(base / "images" / f"{image_id}.jpg", written[image_id])
    write_text(base / "class-descriptions.csv", "".join(f"{mid},{name}\n" for mid, name in MIDS.items()))
    write_text(base / "image-labels.csv", "\n".join([LABELS_HEADER, *label_rows]) + "\n")
    if box_rows is not None:
        write_text(base / "boxes.csv", "\n".join([BOXES_HEADER, *box_rows]) + "\n")
    return written


def box_row(image_id: str, mid: str, x0: int, y0: int, x1: int, y1: int, w: int = W, h: int = H) -> str:
    """boxes.csv row for the inclusive pixel box (x0, y0)-(x1, y1), normalised by the image size."""
    return f"{image_id},xclick,{mid},1,{x0 / w!r},{(x1 + 1) / w!r},{y0 / h!r},{(y1 + 1) / h!r},0,0,0,0,0"


# ---------------------------------------------------------------- Cityscapes


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
