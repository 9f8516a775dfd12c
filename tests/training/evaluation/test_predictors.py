"""Evaluating a model file through the runtime engines, as the vehicle runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import load_hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training import REPO
from training.data.readers import load_dataset
from training.data.synthetic import generate
from training.evaluation import evaluate
from training.evaluation.predictors import engine

HIERARCHIES = REPO / "config" / "hierarchies"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    hierarchy = load_hierarchy(HIERARCHIES / "iv2019.yaml")
    config = ModelConfig("mobilenet_v2", 16, 32, 1, 1)
    net = HierarchicalSegNet(hierarchy.classifier_sizes, "mobilenet_v2", 16, 32, 1, 1, pretrained=None).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", net, hierarchy, config)


def test_engine_predictor_returns_the_engine_decisions(checkpoint: Path):
    hierarchy = load_hierarchy(HIERARCHIES / "iv2019.yaml")
    predictor = engine(hierarchy, str(checkpoint), backend="torch")
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    got = predictor(image)
    want = TorchEngine(checkpoint).infer(image).per_classifier
    assert set(got) == {"root", "human", "vehicle"}
    for name in got:
        np.testing.assert_array_equal(got[name], want[name])


def test_predictor_refuses_a_model_of_another_hierarchy(checkpoint: Path):
    with pytest.raises(ValueError, match="differs from the evaluated hierarchy 'iv2018'"):
        engine(load_hierarchy(HIERARCHIES / "iv2018.yaml"), str(checkpoint), backend="torch")


def test_evaluate_command_with_an_engine(tmp_path: Path, checkpoint: Path):
    generate(tmp_path / "data", "small", seed=1, workers=1, only=["cityscapes"])
    out = tmp_path / "report"
    code = evaluate.main(
        [
            "--hierarchy",
            str(HIERARCHIES / "iv2019.yaml"),
            "--dataset",
            "cityscapes",
            str(tmp_path / "data" / "cityscapes"),
            "val",
            "--predictor",
            "training.evaluation.predictors:engine",
            "--predictor-arg",
            f"model={checkpoint}",
            "--predictor-arg",
            "backend=torch",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == {
        "cityscapes": len(load_dataset("cityscapes", tmp_path / "data" / "cityscapes", split="val"))
    }
    assert set(metrics["classifiers"]) == {"root", "human", "vehicle"}
    assert 0 <= metrics["datasets"]["cityscapes"]["miou"] <= 1
