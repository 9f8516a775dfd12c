"""A tiny training set-up shared by the training tests: the synthetic "small" preset and a
config dict for it (1 image of each dataset per batch, 64x128 crops, a few iterations)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from training import REPO
from training.data.synthetic.generate import generate

HIERARCHIES = REPO / "config" / "hierarchies"
PYTHON = sys.executable


def make_tiny_data(root: Path) -> Path:
    """The synthetic generator's "small" preset: the four datasets in their real formats under ``root``."""
    generate(root, "small", seed=0)
    return root


def tiny_config(data_root: Path, out_dir: Path, **sections) -> dict:
    """A config dict for the tiny data: 1 cityscapes + 1 vistas + 1 gtsdb + 1 tags per batch, 64x128 crops."""
    raw = {
        "hierarchy": str(HIERARCHIES / "iv2018.yaml"),
        "data_root": str(data_root),
        "datasets": [
            {"name": "cityscapes", "root": "cityscapes", "per_batch": 1, "options": {"split": "train"}},
            {"name": "vistas", "root": "vistas", "per_batch": 1, "options": {"split": "training"}},
            {"name": "gtsdb", "root": "gtsdb", "per_batch": 1, "options": {"image_ids": [0, 1, 2, 3, 4, 5]}},
            {"name": "openscapes", "root": "openscapes", "per_batch": 1},
        ],
        "model": {"backbone": "mobilenet_v2", "pretrained": None, "shared_channels": 16, "output_stride": 16},
        "augment": {"crop": [64, 128], "base_height": 64, "scale": [0.75, 1.25]},
        "optimizer": {"lr": 0.01},
        "schedule": {"iterations": 4},
        "run": {"seed": 3, "out_dir": str(out_dir), "num_workers": 0},
        "checkpoint": {"every": 2, "keep": 2},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **values}
        else:
            raw[name] = values
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path
