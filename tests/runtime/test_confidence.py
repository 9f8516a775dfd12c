"""The confidence output of the inference graph (hiseg_ros.engines.torch_graph), on hand-made logits of
the tiny hierarchy, where the chosen leaf's probability can be computed by hand; and what the model
metadata and the TensorRT bindings say about a model with / without it (models exported before the
confidence output existed have none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_hierarchy import FixedLogits, load_tiny

from hiseg_ros.engines.bindings import io_specs
from hiseg_ros.engines.metadata import ModelMetadata
from hiseg_ros.engines.torch_graph import CONFIDENCE_OUTPUT, DecisionGraph

# tiny: root: road | sign | vehicle;  sign: front | back;  front: stop | yield;  vehicle: car | bus


def _softmax(x: list[float]) -> np.ndarray:
    e = np.exp(np.asarray(x, np.float64) - max(x))
    return e / e.sum()


@pytest.fixture
def tiny(tmp_path):
    return load_tiny(tmp_path)


def test_confidence_is_the_product_along_the_decision_path(tiny):
    """Three feature cells (1 x 3), upsampled to 2 x 6 pixels. Cell 0: sign > front > stop; cell 1:
    road (only the root on its path); cell 2: vehicle > bus. Off-path classifiers must not count."""
    cells = {
        "root": [[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.5, 2.5]],  # per cell: road, sign, vehicle
        "sign": [[1.5, 0.0], [0.0, 9.0], [0.0, 9.0]],  # front, back
        "vehicle": [[9.0, 0.0], [9.0, 0.0], [0.0, 0.7]],  # car, bus
        "front": [[1.0, 0.2], [0.0, 9.0], [9.0, 0.0]],  # stop, yield
    }
    logits = {name: torch.tensor(v, dtype=torch.float32).T.reshape(1, len(v[0]), 1, 3) for name, v in cells.items()}
    graph = DecisionGraph(FixedLogits(tiny, logits), tiny, confidence=True).eval()
    with torch.inference_mode():
        *decisions, leaf, confidence = graph(torch.zeros(1, 2, 6, 3, dtype=torch.uint8))
    assert len(decisions) == len(tiny.classifier_names) and confidence.dtype == torch.float32
    ids = {c.name: c.id for c in tiny.leaves}
    assert leaf[0, 0].tolist() == [ids["stop"]] * 2 + [ids["road"]] * 2 + [ids["bus"]] * 2
    p = {name: [_softmax(c) for c in v] for name, v in cells.items()}
    expected = [
        p["root"][0][1] * p["sign"][0][0] * p["front"][0][0],  # sign, front, stop
        p["root"][1][0],  # road
        p["root"][2][2] * p["vehicle"][2][1],  # vehicle, bus
    ]
    np.testing.assert_allclose(confidence[0].numpy(), np.repeat([expected], 2, axis=0).repeat(2, axis=1), rtol=1e-6)
    without = DecisionGraph(FixedLogits(tiny, logits), tiny).eval()
    with torch.inference_mode():
        plain = without(torch.zeros(1, 2, 6, 3, dtype=torch.uint8))
    assert len(plain) == len(decisions) + 1  # decisions + leaf: the graph of models before the confidence
    for a, b in zip(plain, [*decisions, leaf], strict=True):
        assert torch.equal(a, b)


def test_a_flat_hierarchy_gives_the_softmax_maximum():
    from hiseg_ros.hierarchy import hierarchy_from_dict

    classes = [{"name": n, "id": i, "parent": "root", "color": [i, i, i]} for i, n in enumerate("abcd")]
    flat = hierarchy_from_dict({"name": "flat", "classes": classes}, "flat.yaml")
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    graph = DecisionGraph(FixedLogits(flat, {"root": logits}), flat, confidence=True).eval()
    with torch.inference_mode():
        confidence = graph(torch.zeros(2, 3, 5, 3, dtype=torch.uint8))[-1]
    torch.testing.assert_close(confidence, torch.softmax(logits, dim=1).amax(dim=1))
    assert bool(((confidence > 0.25) & (confidence <= 1.0)).all())  # at least 1 / classes


def test_metadata_and_tensorrt_bindings_with_and_without_the_confidence_output(tiny):
    old = ModelMetadata(tiny, tiny.classifier_names, "mobilenet_v2", 16)
    new = ModelMetadata(tiny, tiny.classifier_names, "mobilenet_v2", 16, confidence_output=CONFIDENCE_OUTPUT)
    assert old.output_names == (*tiny.classifier_names, "leaf")
    assert new.output_names == (*tiny.classifier_names, "leaf", "confidence")
    # an older exporter wrote no hiseg.confidence_output key: read as "no confidence"
    assert "hiseg.confidence_output" not in old.to_props()
    assert ModelMetadata.from_props(old.to_props(), "old.onnx").confidence_output == ""
    assert ModelMetadata.from_props(new.to_props(), "new.onnx").confidence_output == "confidence"
    specs = io_specs(new, (1, 32, 48, 3), {})
    assert [s.name for s in specs] == ["image", *new.output_names]
    conf = specs[-1]
    assert conf.device_dtype == conf.host_dtype == np.float32 and conf.nbytes == 32 * 48 * 4
    assert [s.name for s in io_specs(old, (1, 32, 48, 3), {})] == ["image", *old.output_names]
