"""Sign classification given the location (training/evaluation/signs.py): the path log-probability rule."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_hierarchy import load_tiny

from hiseg_ros.hierarchy import Hierarchy
from training.evaluation.signs import leaf_log_probabilities


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return load_tiny(tmp_path_factory.mktemp("h"))


def _log_softmax(values: list[float], k: int) -> float:
    return values[k] - math.log(sum(math.exp(v) for v in values))


def test_leaf_log_probability_is_the_sum_over_the_path(tiny):
    root, sign, front = [0.5, 2.0, -1.0], [1.0, 0.2], [-0.3, 0.9]
    logits = {
        "root": torch.tensor(root).view(1, 3, 1, 1),
        "sign": torch.tensor(sign).view(1, 2, 1, 1),
        "front": torch.tensor(front).view(1, 2, 1, 1),
        "vehicle": torch.tensor([0.0, 3.0]).view(1, 2, 1, 1),
    }
    got = leaf_log_probabilities(tiny, logits, ["stop", "yield", "bus"])
    assert got.shape == (1, 3, 1, 1)
    stop = _log_softmax(root, 1) + _log_softmax(sign, 0) + _log_softmax(front, 0)
    bus = _log_softmax(root, 2) + _log_softmax([0.0, 3.0], 1)
    assert got[0, 0, 0, 0].item() == pytest.approx(stop, abs=1e-6)
    assert got[0, 2, 0, 0].item() == pytest.approx(bus, abs=1e-6)


def test_sibling_leaves_are_ranked_by_their_own_classifier_alone(tiny):
    """Root and "sign" decide nothing between stop and yield: only the "front" classifier does."""
    gen = torch.Generator().manual_seed(0)
    logits = {name: torch.randn(2, n, 4, 5, generator=gen) * 3 for name, n in tiny.classifier_sizes}
    got = leaf_log_probabilities(tiny, logits, ["stop", "yield"]).argmax(1)
    assert torch.equal(got, logits["front"].argmax(1))
