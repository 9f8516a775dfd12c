"""bench/measure_pseudo_labels.py with the segmenter rows, on synthetic OpenScapes files in the real
format and a network checkpoint in the training format (random weights: the rows exist and are
scored, whatever their value); and the headline entry it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.data.synthetic.generate import generate

SCRIPT = REPO / "bench" / "measure_pseudo_labels.py"
HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"


@pytest.mark.slow
def test_only_segmenter_rows_on_real_format_files(tmp_path: Path) -> None:
    generate(tmp_path / "data", "small", seed=0, only=["openscapes"])
    hierarchy = load_hierarchy(HIERARCHY)
    torch.manual_seed(0)
    config = ModelConfig(shared_channels=16)
    checkpoint = save_checkpoint(tmp_path / "net.pt", config.build(hierarchy), hierarchy, config)
    out, results = tmp_path / "measure.json", tmp_path / "weak_labels.json"
    cmd = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "data" / "openscapes"), "--segmenter", str(checkpoint)]
    cmd += ["--segmenter-height", "64", "--only-segmenter", "--limit", "3", "--threads", "1"]
    proc = subprocess.run([*cmd, "--out", str(out), "--results", str(results)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    measured = json.loads(out.read_text())
    assert measured["images"] > 0
    assert set(measured["variants"]) == {"uniform_tiling", "segmenter", "segmenter, no tags"}
    for row in measured["variants"].values():
        assert 0 <= row["miou"] <= 100 and set(row["iou"]) == set(measured["classes"])
    headline = json.loads(results.read_text())
    assert set(headline["ablation"]) == {
        "uniform_tiling",
        "segmenter (network + tags)",
        "segmenter, no tags (network alone)",
    }
    assert headline["pseudo_label_miou"] == measured["variants"]["segmenter"]["miou"]
    assert headline["pseudo_label_pipeline"] == "segmenter (network + tags)"
    assert any("--only-segmenter" in c for c in headline["commands"])
