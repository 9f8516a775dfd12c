"""Engines: ONNX Runtime and PyTorch backends give the same decisions for the same model, the leaf
map is exactly the hierarchy's decision rule, backend selection and its reasons, load errors.

One small random-init checkpoint (a hierarchy whose leaf map is uint16) is saved in the checkpoint
contract and exported once for the module through the real command line (``--checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hiseg_ros.engines import (
    PAD_VALUE_RGB,
    Decisions,
    EngineSelectionError,
    InputShapeError,
    ModelLoadError,
    create_engine,
    model_kind,
)
from hiseg_ros.engines.bindings import adapt_for_tensorrt, tensorrt_type_problems
from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.engines.onnxruntime_engine import OnnxRuntimeEngine, choose_providers
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import load_hierarchy
from hiseg_ros.model import IMAGENET_MEAN_RGB
from training.export import main as export_main

CONFIG = ModelConfig("mobilenet_v2", output_stride=16, shared_channels=32, adaptation_depth=1, adaptation_dilation=1)
SIZES = [(64, 96), (67, 101), (31, 45), (128, 72)]

HIERARCHY_YAML = """\
name: toy16
classes:
  - {name: ground, id: 300, parent: root, color: [10, 10, 10]}
  - {name: vehicle, id: 400, parent: root, color: [20, 20, 20], classifier: vehicle}
  - {name: sign, id: 401, parent: root, color: [30, 30, 30], classifier: sign}
  - {name: car, id: 301, parent: vehicle, color: [40, 40, 40]}
  - {name: truck, id: 302, parent: vehicle, color: [50, 50, 50]}
  - {name: front, id: 402, parent: sign, color: [60, 60, 60], classifier: sign_front}
  - {name: back, id: 303, parent: sign, color: [70, 70, 70]}
  - {name: stop, id: 304, parent: front, color: [80, 80, 80]}
  - {name: limit, id: 305, parent: front, color: [90, 90, 90]}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("engines")
    yaml_path = folder / "toy16.yaml"
    yaml_path.write_text(HIERARCHY_YAML)
    hierarchy = load_hierarchy(yaml_path)
    assert hierarchy.mask_dtype is np.uint16
    torch.manual_seed(3)
    ckpt = save_checkpoint(folder / "toy16.pt", CONFIG.build(hierarchy), hierarchy, CONFIG)
    onnx_path = folder / "toy16.onnx"
    assert export_main(["--checkpoint", str(ckpt), "--hierarchy", str(yaml_path), "--out", str(onnx_path)]) == 0
    return {"checkpoint": ckpt, "onnx": onnx_path, "yaml": yaml_path, "folder": folder}


@pytest.fixture(scope="module")
def ort_engine(models: dict[str, Path]) -> OnnxRuntimeEngine:
    engine, _ = create_engine(models["onnx"], backend="onnxruntime", intra_op_threads=2)
    assert isinstance(engine, OnnxRuntimeEngine)
    return engine


@pytest.fixture(scope="module")
def torch_engine(models: dict[str, Path]) -> TorchEngine:
    engine, _ = create_engine(models["checkpoint"], backend="torch")
    assert isinstance(engine, TorchEngine)
    return engine


def _image(height: int, width: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    shape = (height, width, 3) if batch is None else (batch, height, width, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _assert_consistent(decisions: Decisions, engine_hierarchy, shape: tuple[int, ...]) -> None:
    assert list(decisions.per_classifier) == list(engine_hierarchy.classifier_names)
    for name, value in decisions.per_classifier.items():
        assert value.dtype == np.uint8 and value.shape == shape, name
    assert decisions.leaf.dtype == np.uint16 and decisions.leaf.shape == shape
    np.testing.assert_array_equal(decisions.leaf, engine_hierarchy.flatten(decisions.per_classifier))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_onnxruntime_and_torch_backends_agree(
    ort_engine: OnnxRuntimeEngine, torch_engine: TorchEngine, height: int, width: int
) -> None:
    image = _image(height, width, seed=height * width)
    a, b = ort_engine.infer(image), torch_engine.infer(image)
    _assert_consistent(a, ort_engine.hierarchy, (height, width))
    _assert_consistent(b, torch_engine.hierarchy, (height, width))
    for name in ort_engine.classifier_names:
        assert (a.per_classifier[name] == b.per_classifier[name]).mean() >= 0.999, name
    assert (a.leaf == b.leaf).mean() >= 0.999


def test_onnxruntime_without_spin_wait_sets_the_session_option_and_gives_the_same_decisions(
    models: dict[str, Path], ort_engine: OnnxRuntimeEngine
) -> None:
    """The node's default (cpu_spin_wait false) must only change how ORT's threads wait, not results."""
    quiet, _ = create_engine(models["onnx"], backend="onnxruntime", intra_op_threads=2, spin_wait=False)
    options = quiet._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="allow_spinning"):  # the default engine leaves ORT's default
        ort_engine._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    image = _image(64, 96, seed=11)
    a, b = quiet.infer(image), ort_engine.infer(image)
    for name in quiet.classifier_names:
        np.testing.assert_array_equal(a.per_classifier[name], b.per_classifier[name])
    np.testing.assert_array_equal(a.leaf, b.leaf)


def test_both_backends_read_the_same_hierarchy(
    models: dict[str, Path], ort_engine: OnnxRuntimeEngine, torch_engine: TorchEngine
) -> None:
    expected = load_hierarchy(models["yaml"])
    assert ort_engine.hierarchy == torch_engine.hierarchy == expected
    assert ort_engine.name == "onnxruntime[CPUExecutionProvider]" and torch_engine.name == "torch[cpu]"
    assert ort_engine.metadata.backbone == "mobilenet_v2" and ort_engine.metadata.output_stride == 16
    provenance = json.loads(ort_engine.metadata.provenance)
    assert provenance["source"] == "checkpoint"
    assert provenance["checkpoint_sha256"] == hashlib.sha256(models["checkpoint"].read_bytes()).hexdigest()
    constraints = ort_engine.input_constraints
    assert constraints.dynamic and constraints.fixed_hw is None and constraints.pad_multiple == 1


def test_batches_and_strided_views(ort_engine: OnnxRuntimeEngine, torch_engine: TorchEngine) -> None:
    batch = _image(48, 80, seed=5, batch=3)
    for engine in (ort_engine, torch_engine):
        out = engine.infer(batch)
        _assert_consistent(out, engine.hierarchy, (3, 48, 80))
        single = engine.infer(batch[1])
        np.testing.assert_array_equal(single.leaf, out.leaf[1])
        # A bgr8 message seen as RGB through a reversed-channel view (not contiguous): same result
        # as the contiguous copy.
        bgr = np.ascontiguousarray(batch[0][..., ::-1])
        view = bgr[..., ::-1]
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(engine.infer(view).leaf, engine.infer(batch[0].copy()).leaf)
        # A read-only buffer (a ROS message's data seen through np.frombuffer): used as is, silently.
        read_only = np.frombuffer(batch[2].tobytes(), np.uint8).reshape(batch[2].shape)
        assert not read_only.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(engine.infer(read_only).leaf, out.leaf[2])


def test_pad_to_stride_crops_back(models: dict[str, Path], ort_engine: OnnxRuntimeEngine) -> None:
    padded_ort, _ = create_engine(models["onnx"], backend="onnxruntime", pad_to_stride=True)
    padded_torch, _ = create_engine(models["checkpoint"], backend="torch", pad_to_stride=True)
    assert padded_ort.input_constraints.pad_multiple == 16
    assert padded_ort.input_constraints.padded_hw(67, 101) == (80, 112)
    image = _image(67, 101, seed=9)
    a, b = padded_ort.infer(image), padded_torch.infer(image)
    _assert_consistent(a, padded_ort.hierarchy, (67, 101))
    assert (a.leaf == b.leaf).mean() >= 0.999
    # Padding is the ImageNet mean: the network's top-left region equals running the padded image.
    canvas = np.empty((80, 112, 3), np.uint8)
    canvas[:] = PAD_VALUE_RGB
    canvas[:67, :101] = image
    np.testing.assert_array_equal(ort_engine.infer(canvas).leaf[:67, :101], a.leaf)


def test_pad_value_is_the_imagenet_mean() -> None:
    assert tuple(round(255 * m) for m in IMAGENET_MEAN_RGB) == PAD_VALUE_RGB


def test_bad_images_are_refused(ort_engine: OnnxRuntimeEngine) -> None:
    with pytest.raises(InputShapeError, match="uint8"):
        ort_engine.infer(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputShapeError, match="H x W x 3"):
        ort_engine.infer(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(InputShapeError, match="empty"):
        ort_engine.infer(np.zeros((0, 32, 3), np.uint8))


def test_uint16_leaf_is_int32_for_tensorrt(models: dict[str, Path], ort_engine: OnnxRuntimeEngine) -> None:
    """TensorRT has no uint16: its graph outputs the leaf map as int32 with the same values."""
    adapted, casts = adapt_for_tensorrt(models["onnx"].read_bytes())
    assert casts == {"leaf": np.dtype(np.int32)} and tensorrt_type_problems(adapted) == []
    image = _image(40, 56, seed=11)
    session = ort.InferenceSession(adapted, providers=["CPUExecutionProvider"])
    leaf = session.run(["leaf"], {"image": image[None]})[0][0]
    assert leaf.dtype == np.int32
    np.testing.assert_array_equal(leaf.astype(np.uint16), ort_engine.infer(image).leaf)


# ------------------------------------------------------------------ selection
def test_auto_falls_back_to_onnxruntime_and_says_why(models: dict[str, Path]) -> None:
    engine, reason = create_engine(models["onnx"], intra_op_threads=1)
    assert isinstance(engine, OnnxRuntimeEngine)
    assert reason.startswith("auto: ONNX Runtime, because TensorRT is not installed")
    assert "1 threads" in reason
    _, reason = create_engine(models["onnx"], precision="fp16")
    assert "precision fp16 is a TensorRT option, this backend runs fp32" in reason


def test_auto_with_a_checkpoint_uses_torch(models: dict[str, Path]) -> None:
    assert model_kind(models["checkpoint"]) == "checkpoint" and model_kind(models["onnx"]) == "onnx"
    engine, reason = create_engine(models["checkpoint"])
    assert isinstance(engine, TorchEngine) and "training checkpoint" in reason


def test_impossible_explicit_choices_say_why(models: dict[str, Path]) -> None:
    with pytest.raises(EngineSelectionError, match="TensorRT is not installed"):
        create_engine(models["onnx"], backend="tensorrt", precision="fp16")
    with pytest.raises(EngineSelectionError, match="needs the training checkpoint"):
        create_engine(models["onnx"], backend="torch")
    with pytest.raises(EngineSelectionError, match="needs an exported ONNX model"):
        create_engine(models["checkpoint"], backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        create_engine(models["onnx"], backend="openvino")
    with pytest.raises(ValueError, match="precision must be one of"):
        create_engine(models["onnx"], precision="bf16")


def test_provider_order() -> None:
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    gpu = choose_providers(["CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"], True, "fp16")
    assert [p if isinstance(p, str) else p[0] for p in gpu] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert gpu[0][1]["trt_fp16_enable"] is True
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], prefer_gpu=False) == [
        "CPUExecutionProvider"
    ]


# ------------------------------------------------------------------ load errors
def _edited_copy(models: dict[str, Path], tmp_path: Path, **props: str | None) -> Path:
    model = onnx.load(models["onnx"])
    values = {p.key: p.value for p in model.metadata_props}
    for key, value in props.items():
        key = "hiseg." + key
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, values)
    path = tmp_path / "edited.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"hierarchy": None}, r"lacks hiseg\.hierarchy"),
        ({"hierarchy": '{"schema": 1, "name": "x"'}, "corrupt hierarchy metadata"),
        ({"hierarchy": '{"schema": 1, "name": "x", "classes": []}'}, "corrupt hierarchy metadata"),
        ({"classifiers": '["root", "vehicle"]'}, "do not match the hierarchy"),
        ({"classifiers": "root"}, "not valid JSON"),
        ({"format_version": "99"}, "format version '99'"),
        ({"input_layout": "float_nchw"}, "input layout"),
    ],
)
def test_bad_metadata_names_the_file(models: dict[str, Path], tmp_path: Path, props: dict, message: str) -> None:
    path = _edited_copy(models, tmp_path, **props)
    with pytest.raises(ModelLoadError, match=message) as info:
        create_engine(path, backend="onnxruntime")
    assert str(info.value).startswith(str(path))


def test_model_without_any_metadata(models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(models["onnx"])
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match="not exported by training.export"):
        create_engine(path)


def test_missing_and_corrupt_files(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="nope.onnx: model file does not exist"):
        create_engine(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match="corrupt.onnx: ONNX Runtime cannot load the model"):
        create_engine(corrupt)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(models["onnx"].read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        create_engine(truncated)
    bad_ckpt = tmp_path / "bad.pt"
    torch.save({"model": {}, "hierarchy": "{}"}, bad_ckpt)
    with pytest.raises(ModelLoadError, match=r"bad.pt: checkpoint lacks key\(s\) \['model_config'\]"):
        create_engine(bad_ckpt, backend="torch")


def test_confidence_agrees_across_backends_and_older_models_have_none(
    models: dict[str, Path], ort_engine: OnnxRuntimeEngine, torch_engine: TorchEngine
) -> None:
    """The exported graph's confidence output equals the torch backend's; asked for only on request; a
    model exported without it (as before it existed) loads and reports none."""
    image = _image(48, 80, seed=8)
    assert ort_engine.has_confidence and torch_engine.has_confidence
    a, b = ort_engine.infer(image, confidence=True), torch_engine.infer(image, confidence=True)
    assert a.confidence.dtype == np.float32 and a.confidence.shape == (48, 80)
    assert ((a.confidence > 0.0) & (a.confidence <= 1.0)).all()
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    plain = ort_engine.infer(image)
    assert plain.confidence is None
    np.testing.assert_array_equal(plain.leaf, a.leaf)
    old = models["folder"] / "toy16_noconf.onnx"
    argv = ["--checkpoint", str(models["checkpoint"]), "--hierarchy", str(models["yaml"]), "--out", str(old)]
    assert export_main([*argv, "--no-confidence"]) == 0
    engine, _ = create_engine(old, backend="onnxruntime")
    assert not engine.has_confidence and engine.metadata.confidence_output == ""
    older = engine.infer(image, confidence=True)
    assert older.confidence is None
    np.testing.assert_array_equal(older.leaf, a.leaf)
