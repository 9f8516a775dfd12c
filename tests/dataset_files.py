"""Minimal writers of tiny dataset files in the real on-disk formats (Cityscapes, Vistas, GTSDB, tags).

Deliberately independent of the readers (cv2 / PIL / plain text), so a reader that misreads a
format fails the tests that use them (tests/training/data).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.data.readers.label_tables import VISTAS_V12_LABELS

H, W = 12, 16  # image size of every written sample: small keeps the suite fast


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
