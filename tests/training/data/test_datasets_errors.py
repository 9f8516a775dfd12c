"""Broken dataset files: every error is a DatasetFormatError naming the file (and line)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from dataset_files import (
    BOXES_HEADER,
    LABELS_HEADER,
    H,
    W,
    box_row,
    cityscapes_paths,
    make_cityscapes,
    make_gtsdb,
    make_tags,
    make_vistas,
    random_rgb,
    truncate,
    vistas_config,
    write_gray,
    write_palette_png,
    write_rgb,
    write_text,
)

from training.data.readers import (
    CityscapesDataset,
    DatasetFormatError,
    GTSDBDataset,
    ImageTagsDataset,
    VistasDataset,
    load_dataset,
)


def raises_naming(path: Path, line: int | None = None, match: str = ""):
    """pytest.raises for a DatasetFormatError whose message starts with ``path[:line]:``."""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    return pytest.raises(DatasetFormatError, match=re.escape(where) + ".*" + match)


# ---------------------------------------------------------------- roots and splits


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("cityscapes", {}), ("vistas", {}), ("gtsdb", {}), ("openscapes", {})],
)
def test_missing_root(tmp_path: Path, name: str, kwargs: dict) -> None:
    with raises_naming(tmp_path / "nope", match="missing"):
        load_dataset(name, tmp_path / "nope", **kwargs)


def test_missing_split_folders(tmp_path: Path) -> None:
    make_cityscapes(tmp_path / "cs", "train", ["ulm_000000_000019"])
    with raises_naming(tmp_path / "cs" / "leftImg8bit" / "val", match="missing"):
        CityscapesDataset(tmp_path / "cs", "val")
    make_vistas(tmp_path / "mv", "training", ["k"])
    with raises_naming(tmp_path / "mv" / "validation", match="missing"):
        VistasDataset(tmp_path / "mv", "validation")
    (tmp_path / "mv" / "testing" / "images").mkdir(parents=True)
    with raises_naming(tmp_path / "mv" / "testing", match="label folder"):
        VistasDataset(tmp_path / "mv", "testing")
    with raises_naming(tmp_path / "mv" / "training", match="v2.0/labels"):
        VistasDataset(tmp_path / "mv", "training", version="v2.0")
    make_tags(tmp_path / "os", ["i"], [])
    with raises_naming(tmp_path / "os" / "train", match="missing"):
        ImageTagsDataset(tmp_path / "os", split="train")


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_pairing_and_names(tmp_path: Path) -> None:
    make_cityscapes(tmp_path, "train", ["ulm_000000_000019", "ulm_000001_000019"])
    image, label = cityscapes_paths(tmp_path, "train", "ulm_000001_000019")
    label.unlink()
    with raises_naming(image, match="no label file ulm_000001_000019_gtFine_labelIds.png"):
        CityscapesDataset(tmp_path)
    write_gray(label, np.zeros((H, W), np.uint8))
    image.unlink()
    with raises_naming(label, match="no image file"):
        CityscapesDataset(tmp_path)
    write_rgb(image, random_rgb(0))
    bad_name = write_rgb(image.with_name("ulm_1_2_leftImg8bit.png"), random_rgb(0))
    with raises_naming(bad_name, match=r"ulm_<seq:06d>_<frame:06d>"):
        CityscapesDataset(tmp_path)
    bad_name.unlink()
    with raises_naming(tmp_path / "leftImg8bit" / "train" / "bonn", match="missing"):
        CityscapesDataset(tmp_path, cities=["ulm", "bonn"])
    (tmp_path / "gtFine" / "train" / "jena").mkdir()  # city with labels folder only
    with raises_naming(tmp_path / "leftImg8bit" / "train" / "jena", match="missing"):
        CityscapesDataset(tmp_path)


@pytest.mark.parametrize("problem", ["size", "ids", "channels", "truncated_label", "truncated_image"])
def test_cityscapes_broken_files_at_load(tmp_path: Path, problem: str) -> None:
    make_cityscapes(tmp_path, "val", ["ulm_000000_000019"])
    image, label = cityscapes_paths(tmp_path, "val", "ulm_000000_000019")
    if problem == "size":
        write_gray(label, np.zeros((H + 1, W), np.uint8))
        expected = (label, "label is 16x13 but its image .* is 16x12")
    elif problem == "ids":
        values = np.zeros((H, W), np.uint8)
        values[0, :3] = [34, 200, 34]
        write_gray(label, values)
        expected = (label, r"unknown label ids 34, 200 \(expected Cityscapes labelIds 0..33\)")
    elif problem == "channels":
        write_rgb(label, random_rgb(1))
        expected = (label, "expected an 8-bit single-channel labelIds PNG, got 3 channel")
    elif problem == "truncated_label":
        truncate(label)
        expected = (label, "cannot decode")
    else:
        truncate(image)
        expected = (image, "cannot decode image")
    ds = CityscapesDataset(tmp_path, "val")  # indexing does not decode
    with raises_naming(expected[0], match=expected[1]):
        ds[0]


# ---------------------------------------------------------------- Vistas


@pytest.mark.parametrize(
    ("content", "line", "match"),
    [
        (None, None, "missing Vistas config file"),
        ('{"labels": [\n  {"name": "a",\n  ]}', 3, "malformed JSON"),
        ('{"version": "1.2"}', None, 'non-empty "labels" list'),
        (
            '{"labels": [{"name": "a", "color": [1, 2, 3]}, {"color": [1, 2, 3]}]}',
            None,
            r'"labels"\[1\] has no "name"',
        ),
        ('{"labels": [{"name": "a"}]}', None, r'"labels"\[0\] \(a\) has no "color"'),
        ('{"labels": [{"name": "a", "color": [1, 2, 300]}]}', None, '"color"'),
    ],
)
def test_vistas_config_malformed(tmp_path: Path, content: str | None, line: int | None, match: str) -> None:
    make_vistas(tmp_path, "training", ["k"])
    config = tmp_path / "config.json"
    if content is None:
        config.unlink()
    else:
        config.write_text(content, encoding="utf-8")
    with raises_naming(config, line, match):
        VistasDataset(tmp_path)


def test_vistas_pairing(tmp_path: Path) -> None:
    make_vistas(tmp_path, "training", ["a", "b"])
    label = tmp_path / "training" / "labels" / "b.png"
    label.rename(label.with_name("c.png"))
    with raises_naming(tmp_path / "training" / "images" / "b.jpg", match="no label file training/labels/b.png"):
        VistasDataset(tmp_path)
    (tmp_path / "training" / "images" / "b.jpg").unlink()
    with raises_naming(label.with_name("c.png"), match="no image file training/images/c.jpg"):
        VistasDataset(tmp_path)


@pytest.mark.parametrize("problem", ["rgb_label", "ids", "size", "truncated_image", "truncated_label"])
def test_vistas_broken_files_at_load(tmp_path: Path, problem: str) -> None:
    make_vistas(tmp_path, "validation", ["k"], version="v2.0", num_labels=10)
    image = tmp_path / "validation" / "images" / "k.jpg"
    label = tmp_path / "validation" / "v2.0" / "labels" / "k.png"
    colors = [tuple(lab["color"]) for lab in vistas_config(10)["labels"]]
    if problem == "rgb_label":
        write_rgb(label, random_rgb(2))
        expected = (label, "expected an 8-bit palette .* got mode 'RGB'")
    elif problem == "ids":
        values = np.zeros((H, W), np.uint8)
        values[2, 2], values[3, 3] = 10, 65
        write_palette_png(label, values, colors)
        expected = (label, r"unknown label ids 10, 65 \(expected indices 0..9 of config_v2.0.json\)")
    elif problem == "size":
        write_palette_png(label, np.zeros((H, W + 2), np.uint8), colors)
        expected = (label, "label is 18x12 but its image k.jpg is 16x12")
    elif problem == "truncated_image":
        truncate(image)
        expected = (image, "cannot decode image")
    else:
        truncate(label)
        expected = (label, "cannot decode PNG")
    ds = VistasDataset(tmp_path, "validation")
    with raises_naming(expected[0], match=expected[1]):
        ds[0]


# ---------------------------------------------------------------- GTSDB


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("00001.ppm;1;2;3;4", "5 fields, expected 6"),
        ("00001.ppm;1;2;3;4;5;6", "7 fields, expected 6"),
        ("00001.ppm;1;2;x;4;5", "non-integer"),
        ("00001.ppm;1;2;3;4;1.5", "non-integer"),
        ("00001.ppm;5;2;3;4;5", "left <= right"),
        ("00001.ppm;1;6;3;4;5", "top <= bottom"),
        ("00001.ppm;-1;2;3;4;5", "0 <= left"),
        ("00001.ppm;1;2;3;4;43", "ClassID 43 outside 0..42"),
        ("00001.ppm;1;2;3;4;-1", "ClassID -1 outside"),
        ("00009.ppm;1;2;3;4;5", "names image 00009.ppm which does not exist"),
    ],
)
def test_gtsdb_malformed_gt_line(tmp_path: Path, bad_line: str, match: str) -> None:
    make_gtsdb(tmp_path, [0, 1], ["00000.ppm;1;2;3;4;5", "", bad_line, "00001.ppm;1;2;3;4;5"])
    with raises_naming(tmp_path / "gt.txt", 3, match):
        GTSDBDataset(tmp_path)


def test_gtsdb_box_outside_image_reported_at_load_with_line(tmp_path: Path) -> None:
    lines = ["00000.ppm;0;0;15;11;1", f"00001.ppm;0;0;{W - 1};{H};2", f"00001.ppm;0;0;{W};3;2"]
    make_gtsdb(tmp_path, [0, 1], lines)
    ds = GTSDBDataset(tmp_path)
    assert len(ds[0].boxes) == 1  # the box touching the border is inside
    with raises_naming(tmp_path / "gt.txt", 2, f"outside 00001.ppm of {W}x{H}"):
        ds[1]


def test_gtsdb_missing_files(tmp_path: Path) -> None:
    make_gtsdb(tmp_path, [0, 1], [])
    with raises_naming(tmp_path / "00005.ppm", match="does not exist"):
        GTSDBDataset(tmp_path, image_ids=[0, 5])
    with raises_naming(tmp_path, match="no samples found"):
        GTSDBDataset(tmp_path, split="test")
    truncate(tmp_path / "00001.ppm")
    with raises_naming(tmp_path / "00001.ppm", match="cannot decode image"):
        GTSDBDataset(tmp_path)[1]
    (tmp_path / "gt.txt").unlink()
    with raises_naming(tmp_path / "gt.txt", match="missing GTSDB ground truth"):
        GTSDBDataset(tmp_path)


# ---------------------------------------------------------------- image-level tags


@pytest.mark.parametrize(
    ("file", "rows", "line", "match"),
    [
        ("image-labels.csv", ["ImageID,Source,LabelName", "i,v,/m/0k4j"], 1, "lacks column.*Confidence"),
        ("image-labels.csv", [LABELS_HEADER, "i,v,/m/0k4j,1", "i,v,/m/nope,1"], 3, "unknown MID '/m/nope'"),
        ("image-labels.csv", [LABELS_HEADER, "ghost,v,/m/0k4j,1"], 2, "ImageID 'ghost' has no image"),
        ("image-labels.csv", [LABELS_HEADER, "i,v,/m/0k4j"], 2, "3 fields, expected 4"),
        ("image-labels.csv", [LABELS_HEADER, "i,v,/m/0k4j,yes"], 2, "Confidence 'yes' is not a number"),
        ("image-labels.csv", [LABELS_HEADER, "i,v,/m/0k4j,2"], 2, "outside 0..1"),
        ("boxes.csv", ["ImageID,LabelName,XMin,XMax,YMin", "i,/m/0k4j,0,1,0"], 1, "lacks column.*YMax"),
        ("boxes.csv", [BOXES_HEADER, box_row("i", "/m/zzz", 1, 1, 2, 2)], 2, "unknown MID"),
        ("boxes.csv", [BOXES_HEADER, box_row("ghost", "/m/0k4j", 1, 1, 2, 2)], 2, "ImageID 'ghost'"),
        ("boxes.csv", [BOXES_HEADER, "i,x,/m/0k4j,1,0.5,0.2,0,1,0,0,0,0,0"], 2, "XMin <= XMax"),
        ("boxes.csv", [BOXES_HEADER, "i,x,/m/0k4j,1,0,1.5,0,1,0,0,0,0,0"], 2, "normalised"),
        ("class-descriptions.csv", ["/m/0k4j,Car", "/m/01g317"], 2, "expected 2 non-empty fields"),
    ],
)
def test_image_tags_malformed_csv(tmp_path: Path, file: str, rows: list[str], line: int, match: str) -> None:
    make_tags(tmp_path, ["i"], ["i,v,/m/0k4j,1"], box_rows=[])
    write_text(tmp_path / file, "\n".join(rows) + "\n")
    with raises_naming(tmp_path / file, line, match):
        ImageTagsDataset(tmp_path)


def test_image_tags_missing_files_and_corrupt_image(tmp_path: Path) -> None:
    make_tags(tmp_path, ["i"], ["i,v,/m/0k4j,1"])
    truncate(tmp_path / "images" / "i.jpg")
    with raises_naming(tmp_path / "images" / "i.jpg", match="cannot decode image"):
        ImageTagsDataset(tmp_path)[0]
    (tmp_path / "image-labels.csv").unlink()
    with raises_naming(tmp_path / "image-labels.csv", match="missing"):
        ImageTagsDataset(tmp_path)
    (tmp_path / "class-descriptions.csv").unlink()
    with raises_naming(tmp_path / "class-descriptions.csv", match="missing"):
        ImageTagsDataset(tmp_path)


def test_vistas_config_is_json_with_real_table(tmp_path: Path) -> None:
    """The config writer itself round-trips through the reader's parser (guards the helper)."""
    make_vistas(tmp_path, "training", ["k"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert len(config["labels"]) == 66 and config["labels"][65]["name"] == "void--unlabeled"
    assert VistasDataset(tmp_path).labels[65].evaluate is False
