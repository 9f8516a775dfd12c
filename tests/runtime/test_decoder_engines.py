"""The finer-resolution options end to end: an output-stride-8 network with the light decoder
(logits at stride 4) saved as a checkpoint, rebuilt from it, exported through the real command
line (``--checkpoint``) and run by ONNX Runtime and by the PyTorch engine, which must agree.

One small random-init MobileNetV2 export for the module; the model config format checks need none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_training import tiny_config, write_config

from hiseg_ros.engines import create_engine
from hiseg_ros.engines.bindings import adapt_for_tensorrt, tensorrt_type_problems
from hiseg_ros.engines.checkpoint import CheckpointFormatError, ModelConfig, load_checkpoint, save_checkpoint
from hiseg_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import load_hierarchy
from hiseg_ros.model import decide, normalize_image
from training import REPO
from training.export import main as export_main
from training.fit.config import ConfigError, load_config

CONFIG = ModelConfig("mobilenet_v2", output_stride=8, shared_channels=32, decoder="deconv_skip")
HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"
SIZES = [(64, 96), (67, 101), (33, 45)]


pytestmark = pytest.mark.slow  # exports an os8 + decoder model to ONNX in set-up (tens of seconds)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("decoder")
    hierarchy = load_hierarchy(HIERARCHY)
    torch.manual_seed(5)
    net = CONFIG.build(hierarchy).eval()
    ckpt = save_checkpoint(folder / "os8_decoder.pt", net, hierarchy, CONFIG)
    onnx_path = folder / "os8_decoder.onnx"
    assert export_main(["--checkpoint", str(ckpt), "--hierarchy", str(HIERARCHY), "--out", str(onnx_path)]) == 0
    return {"checkpoint": ckpt, "onnx": onnx_path, "net": net, "hierarchy": hierarchy}


@pytest.fixture(scope="module")
def engines(models: dict) -> tuple[OnnxRuntimeEngine, TorchEngine]:
    ort_engine, _ = create_engine(models["onnx"], backend="onnxruntime", intra_op_threads=2)
    torch_engine, _ = create_engine(models["checkpoint"], backend="torch")
    assert isinstance(ort_engine, OnnxRuntimeEngine) and isinstance(torch_engine, TorchEngine)
    return ort_engine, torch_engine


def test_checkpoint_carries_the_decoder_and_the_torch_engine_rebuilds_the_network(models: dict, engines) -> None:
    raw = torch.load(models["checkpoint"], map_location="cpu", weights_only=True)
    assert raw["model_config"] == {
        "backbone": "mobilenet_v2",
        "output_stride": 8,
        "shared_channels": 32,
        "adaptation_depth": 1,
        "adaptation_dilation": 1,
        "decoder": "deconv_skip",
    }
    loaded = engines[1].checkpoint
    assert loaded.config == CONFIG and loaded.net.logit_stride == 4
    saved = models["net"].state_dict()
    rebuilt = loaded.net.state_dict()
    assert list(rebuilt) == list(saved) and any(".decoder." in k for k in rebuilt)
    assert all(torch.equal(rebuilt[k], saved[k]) for k in saved)


def test_exported_model_describes_the_decoder(engines) -> None:
    meta = engines[0].metadata
    assert meta.output_stride == 8 and meta.model_config == CONFIG.to_dict()
    assert meta.model_config["decoder"] == "deconv_skip"


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_onnxruntime_and_torch_agree_at_the_decoder_resolution(engines, models: dict, height: int, width: int) -> None:
    ort_engine, torch_engine = engines
    image = np.random.default_rng(height + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    a, b = ort_engine.infer(image), torch_engine.infer(image)
    hierarchy = models["hierarchy"]
    for decisions in (a, b):
        assert list(decisions.per_classifier) == list(hierarchy.classifier_names)
        for name, value in decisions.per_classifier.items():
            assert value.dtype == np.uint8 and value.shape == (height, width), name
        assert decisions.leaf.shape == (height, width)
        np.testing.assert_array_equal(decisions.leaf, hierarchy.flatten(decisions.per_classifier))
    for name in hierarchy.classifier_names:
        assert (a.per_classifier[name] == b.per_classifier[name]).mean() >= 0.999, name
    # The in-graph rule is argmax on the stride-4 logits + nearest upsampling, as decide() does.
    with torch.inference_mode():
        logits = models["net"](torch.from_numpy(normalize_image(image)))
    assert {tuple(v.shape[-2:]) for v in logits.values()} == {(-(-height // 4), -(-width // 4))}
    reference = decide(logits, (height, width))
    for name in hierarchy.classifier_names:
        assert (reference[name][0].numpy() == b.per_classifier[name]).mean() >= 0.999, name


def test_decoder_graph_passes_the_tensorrt_type_rules(models: dict) -> None:
    """The transposed convolutions and the crop add nothing TensorRT's type rules refuse."""
    original = models["onnx"].read_bytes()
    ops = {node.op_type for node in onnx.load_from_string(original).graph.node}
    assert "ConvTranspose" in ops
    adapted, casts = adapt_for_tensorrt(original)
    assert casts == {} and tensorrt_type_problems(adapted) == []


def test_model_config_without_decoder_key_is_the_network_without_decoder(tmp_path: Path) -> None:
    """Files written before the option existed read as ``decoder: none``; ``none`` is not written."""
    old = {"backbone": "resnet18", "output_stride": 8, "shared_channels": 32, "adaptation_depth": 1}
    old["adaptation_dilation"] = 1
    config = ModelConfig.from_dict(old, "old.pt")
    assert config.decoder == "none" and config.to_dict() == old
    assert ModelConfig.from_dict({**old, "decoder": "deconv_skip"}, "new.pt").decoder == "deconv_skip"
    with pytest.raises(CheckpointFormatError, match=r"x\.pt: model_config\.decoder: 'aspp' is not one of"):
        ModelConfig.from_dict({**old, "decoder": "aspp"}, "x.pt")
    with pytest.raises(CheckpointFormatError, match=r"x\.pt: model_config\.output_stride: expected an integer"):
        ModelConfig.from_dict({**old, "output_stride": "8"}, "x.pt")


def test_expected_config_differing_in_the_decoder_is_refused(models: dict) -> None:
    plain = ModelConfig("mobilenet_v2", output_stride=8, shared_channels=32)
    with pytest.raises(CheckpointFormatError, match="decoder: checkpoint 'deconv_skip' vs 'none'"):
        load_checkpoint(models["checkpoint"], expected_config=plain)


def test_training_config_takes_the_options(tmp_path: Path) -> None:
    """``model: {output_stride: 8, decoder: deconv_skip}`` reaches the network and its checkpoint
    entry; a misspelt decoder is refused naming the file and key."""
    raw = tiny_config(tmp_path / "data", tmp_path / "out", model={"output_stride": 8, "decoder": "deconv_skip"})
    config, hierarchy = load_config(write_config(tmp_path / "fine.yaml", raw), check_data=False)
    assert config.model.to_dict()["decoder"] == "deconv_skip" and config.model.output_stride == 8
    assert config.model.build(hierarchy).logit_stride == 4
    bad = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "data", tmp_path / "out", model={"decoder": "x"}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: model\.decoder: unknown decoder 'x'"):
        load_config(bad, check_data=False)
