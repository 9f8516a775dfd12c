"""The node's parameters without ROS: the TensorRT profile they ask for, the first-frame check, device
selection, the backend choice with TensorRT's dependencies, the parameter file's key.

TensorRT cannot exist on these machines: where a test needs it to import, it puts a FAKE ``tensorrt``
module (a stand-in, nothing of TensorRT's API) on sys.path, and says so.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hiseg_ros import node_params
from hiseg_ros.engines import ShapeProfile, choose_backend, create_engine, probe_tensorrt
from hiseg_ros.engines.engine_cache import EngineCache, EngineCacheKey
from hiseg_ros.engines.onnxruntime_engine import choose_providers
from hiseg_ros.engines.select import EngineSelectionError, parse_device
from hiseg_ros.engines.tensorrt_engine import TensorRTProbe
from training import REPO

PARAMS_FILE = REPO / "config" / "hiseg.yaml"


def _values(**changes: object) -> dict[str, object]:
    values = {p.name: p.default for p in node_params.PARAMETERS} | {"model_path": "m.onnx"}
    return values | {k.replace("__", "."): v for k, v in changes.items()}


# ------------------------------------------------------------------ TensorRT profile from the parameters
@pytest.mark.parametrize("size", [(1080, 1920), (1200, 1920), (1536, 2048)])
def test_the_profile_follows_the_camera_size(size):
    height, width = size
    profile = node_params.shape_profile(_values(camera__height=height, camera__width=width))
    assert profile is not None and profile.max_hw == size and profile.opt_hw == size
    constraints = profile.constraints(output_stride=16, pad_to_stride=False)
    assert node_params.input_problem(constraints, height, width) is None
    assert node_params.input_problem(constraints, height // 2, width // 2) is None  # smaller still runs
    # the default profile (no camera size) can never take these frames: one message naming the fix
    default = ShapeProfile().constraints(16, False)
    why = node_params.input_problem(default, height, width)
    assert why is not None and "larger than the engine maximum" in why and "camera.width / camera.height" in why
    assert node_params.shape_profile(_values()) is None


def test_resize_fit_builds_for_the_network_size_and_camera_size_needs_both():
    profile = node_params.shape_profile(_values(resize__policy="fit", camera__height=1080, camera__width=1920))
    assert profile == ShapeProfile.for_size(512, 1024)
    assert ShapeProfile.for_size(32, 2000).min_hw == (32, 64)
    assert any("give both" in e for e in node_params.problems(_values(camera__width=1920)))


def test_the_engine_cache_is_keyed_by_the_profile(tmp_path: Path):
    key = EngineCacheKey("a" * 64, "10.3.0", "Orin", "8.7", "fp16", ShapeProfile().input_shapes(), 1 << 30)
    camera = dataclasses.replace(
        key, profile=node_params.shape_profile(_values(camera__height=1080, camera__width=1920)).input_shapes()
    )
    cache = EngineCache(tmp_path)
    cache.store(key, b"default-profile-engine")
    assert cache.engine_path(camera) != cache.engine_path(key)
    assert cache.load(camera) is None and cache.load(key) == b"default-profile-engine"
    assert camera.to_dict()["profile"][2] == [1, 1080, 1920, 3]


# ------------------------------------------------------------------ device
def test_device_values_and_the_error_names_the_parameter():
    assert parse_device("auto") == ("auto", 0) and parse_device("cpu") == ("cpu", 0)
    assert parse_device("cuda") == ("cuda", 0) and parse_device("cuda:3") == ("cuda", 3)
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA", "0"):
        with pytest.raises(ValueError, match=r"device: .* is not one of auto, cpu, cuda, cuda:N"):
            parse_device(bad)
        assert any(e.startswith("device:") for e in node_params.problems(_values(device=bad)))
    assert node_params.problems(_values(device="cuda:1")) == []


def test_device_reaches_the_backends_choice_and_the_gpu_providers(exported_model: Path):
    # a probe value describing a machine with TensorRT and a GPU (hardware that cannot exist here)
    gpu = TensorRTProbe("10.3.0", "Orin (compute 8.7)")
    assert choose_backend("auto", "onnx", gpu, "cpu").backend == "onnxruntime"
    with pytest.raises(EngineSelectionError, match="runs on a GPU only, but device is 'cpu'"):
        choose_backend("tensorrt", "onnx", gpu, "cpu")
    providers = choose_providers(
        ["CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"], device_id=2
    )
    assert providers[0][1]["device_id"] == 2 and providers[1] == ("CUDAExecutionProvider", {"device_id": 2})
    # ONNX Runtime here has only the CPU provider: an explicit GPU is an error, never a silent CPU run
    engine, _ = create_engine(exported_model, backend="onnxruntime", device="cpu")
    assert engine.name == "onnxruntime[CPUExecutionProvider]"
    with pytest.raises(EngineSelectionError, match="device 'cuda:1': ONNX Runtime runs on the CPU only here"):
        create_engine(exported_model, backend="onnxruntime", device="cuda:1")


# ------------------------------------------------------------------ TensorRT's dependencies decide "auto"
@pytest.fixture
def fake_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A FAKE importable ``tensorrt`` (TensorRT cannot be installed here): only ``__version__``."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text('__version__ = "10.3.0-fake"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # no cuda-python: its import raises ImportError
    yield
    sys.modules.pop("tensorrt", None)  # the fake must not stay imported for the tests that follow


def test_auto_with_tensorrt_but_no_cuda_python_picks_onnxruntime_and_says_why(fake_tensorrt, exported_model):
    probe = probe_tensorrt()
    assert probe.tensorrt_version == "10.3.0-fake" and not probe.available
    assert "cuda-python is not installed" in probe.problem
    engine, reason = create_engine(exported_model, backend="auto")
    assert engine.name.startswith("onnxruntime[")
    assert (
        reason.startswith("auto: ONNX Runtime, because TensorRT 10.3.0-fake imports, but") and "cuda-python" in reason
    )


def test_auto_with_tensorrt_but_no_onnx_names_onnx(fake_tensorrt, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # onnx missing too (the graph adaptation imports it)
    probe = probe_tensorrt()
    assert "onnx (graph adaptation before the engine build) does not import" in probe.problem
    assert "cuda-python is not installed" in probe.problem
    assert choose_backend("auto", "onnx", probe).backend == "onnxruntime"
    with pytest.raises(EngineSelectionError, match="backend 'tensorrt' cannot run here: .*onnx .*does not import"):
        choose_backend("tensorrt", "onnx", probe)


# ------------------------------------------------------------------ parameter file
def test_parameter_file_applies_to_any_node_name_and_sets_every_parameter():
    import yaml

    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == [node_params.PARAMS_FILE_KEY] == ["/**"]
    values = node_params.read_params_file(PARAMS_FILE)
    assert set(values) == set(node_params.SPEC)
    assert node_params.problems(values | {"model_path": "m.onnx"}) == []
