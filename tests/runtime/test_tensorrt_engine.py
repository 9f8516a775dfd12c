"""TensorRT backend.

Everything around TensorRT runs here on the CPU: the engine cache (keying, invalidation, atomic
writes), the INT8 calibration batcher, shape / dtype / buffer bookkeeping, the uint16 -> int32
graph adaptation, and the fallback decision with TensorRT really missing. The tests marked ``gpu``
build and run real engines; they are skipped with the probe's reason where TensorRT or a CUDA GPU
is missing (always on the development machines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hiseg_ros.engines import PAD_VALUE_RGB, ModelMetadata, ShapeProfile, choose_backend, probe_tensorrt
from hiseg_ros.engines.bindings import DeviceBuffers, adapt_for_tensorrt, io_specs, tensorrt_type_problems
from hiseg_ros.engines.calibration import CalibrationBatcher, CalibrationError, letterbox
from hiseg_ros.engines.engine_cache import EngineCache, EngineCacheKey, sha256_file
from hiseg_ros.engines.select import EngineSelectionError
from hiseg_ros.engines.tensorrt_engine import (
    TensorRTEngine,
    TensorRTOptions,
    TensorRTProbe,
    TensorRTUnavailableError,
    import_tensorrt,
)
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training import REPO

HIERARCHIES = REPO / "config" / "hierarchies"
PROBE = probe_tensorrt()
needs_gpu = pytest.mark.skipif(not PROBE.available, reason=f"needs TensorRT and a CUDA GPU: {PROBE.problem}")


def _key(**changes: object) -> EngineCacheKey:
    base = EngineCacheKey(
        model_sha256="a" * 64,
        tensorrt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
        precision="fp16",
        profile=ShapeProfile().input_shapes(),
        workspace_bytes=1 << 30,
        model_name="iv2018",
    )
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------ engine cache
@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"tensorrt_version": "10.4.0"},
        {"gpu_name": "NVIDIA GeForce RTX 3060"},
        {"compute_capability": "8.6"},
        {"precision": "int8"},
        {"profile": ShapeProfile(max_hw=(1080, 1920)).input_shapes()},
        {"profile": ShapeProfile(max_batch=2, opt_batch=2).input_shapes()},
        {"workspace_bytes": 2 << 30},
        {"calibration": "c" * 64},
        {"recipe": 99},
    ],
)
def test_cache_key_changes_with_each_component(change: dict) -> None:
    assert _key(**change).digest() != _key().digest()
    assert _key(**change) != _key()


def test_cache_key_is_stable_otherwise() -> None:
    assert _key().digest() == _key().digest()
    assert _key(model_name="renamed").digest() == _key().digest()  # the file name is not the identity
    assert _key().digest() == EngineCacheKey(**{**dataclasses.asdict(_key())}).digest()
    assert json.loads(json.dumps(_key().to_dict())) == _key().to_dict()


def test_sha256_file_reads_in_blocks_and_equals_hashlib(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 2500, dtype=np.uint8).tobytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert sha256_file(path, chunk=1000) == sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = _key()
    assert cache.load(key) is None
    path = cache.store(key, b"serialized engine v1")
    assert path.name.startswith("iv2018-fp16-") and path.suffix == ".engine"
    assert cache.load(key) == b"serialized engine v1"
    assert cache.load(_key(precision="fp32")) is None  # another key: rebuild
    assert cache.load(_key(gpu_name="Xavier")) is None
    cache.store(_key(precision="fp32"), b"fp32 engine")
    assert cache.load(key) == b"serialized engine v1"  # entries coexist
    # No temporary files left behind by the atomic writes.
    assert sorted(p.suffix for p in (tmp_path / "engines").iterdir()) == [".engine", ".engine", ".json", ".json"]
    cache.invalidate(key)
    assert cache.load(key) is None and not path.exists()


def test_cache_refuses_an_entry_whose_stored_key_differs(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = _key()
    cache.store(key, b"engine")
    sidecar = cache.key_path(key)
    stored = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(stored | {"tensorrt_version": "8.6.1"}))  # e.g. digest-prefix collision
    assert cache.load(key) is None
    sidecar.write_text("{truncated")
    assert cache.load(key) is None
    cache.store(key, b"rebuilt")
    assert cache.load(key) == b"rebuilt"


def test_engine_without_its_key_is_not_used(tmp_path: Path) -> None:
    """A crash between the two writes leaves an engine without a key: it must count as missing."""
    cache = EngineCache(tmp_path)
    key = _key()
    cache.engine_path(key).write_bytes(b"half written?")
    assert cache.load(key) is None


# ------------------------------------------------------------------ calibration batcher
def _write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        image = np.full((h, w, 3), (i * 40 % 256, 100, 200), np.uint8)  # RGB
        path = folder / f"img{i:02d}.{'jpg' if i % 2 else 'png'}"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def test_batcher_yields_full_letterboxed_batches(tmp_path: Path) -> None:
    _write_images(tmp_path / "calib", [(40, 60), (60, 40), (32, 64), (64, 64), (50, 50)])
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    batcher = CalibrationBatcher(tmp_path / "calib", batch_size=2, shape_hw=(32, 48))
    assert batcher.num_batches == len(batcher) == 2  # 5 images: the incomplete tail is dropped
    assert batcher.batch_shape == (2, 32, 48, 3) and batcher.batch_nbytes == 2 * 32 * 48 * 3
    batches = list(batcher)
    assert len(batches) == 2
    for batch in batches:
        assert batch.shape == (2, 32, 48, 3) and batch.dtype == np.uint8 and batch.flags.c_contiguous
    # img01 is 60x40 (portrait) in a 32x48 box: centred 32x21 (rounded), padded left and right.
    portrait = batches[0][1]
    assert tuple(portrait[16, 0]) == PAD_VALUE_RGB and tuple(portrait[16, 47]) == PAD_VALUE_RGB
    assert abs(int(portrait[16, 24, 0]) - 40) <= 3 and abs(int(portrait[16, 24, 2]) - 200) <= 3  # RGB order
    assert len(list(batcher)) == 2  # iterating again starts over
    assert CalibrationBatcher(tmp_path / "calib", 2, (32, 48), max_batches=1).num_batches == 1


def test_batcher_fingerprint_follows_the_images(tmp_path: Path) -> None:
    paths = _write_images(tmp_path / "calib", [(40, 60)] * 4)
    first = CalibrationBatcher(tmp_path / "calib", 2, (32, 48)).fingerprint()
    assert CalibrationBatcher(tmp_path / "calib", 2, (32, 48)).fingerprint() == first
    assert CalibrationBatcher(tmp_path / "calib", 2, (64, 96)).fingerprint() != first
    cv2.imwrite(str(paths[0]), np.zeros((41, 60, 3), np.uint8))
    assert CalibrationBatcher(tmp_path / "calib", 2, (32, 48)).fingerprint() != first


def test_batcher_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        CalibrationBatcher(tmp_path / "missing", 2, (32, 48))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(CalibrationError, match="holds no images"):
        CalibrationBatcher(tmp_path / "empty", 2, (32, 48))
    _write_images(tmp_path / "one", [(40, 60)])
    with pytest.raises(CalibrationError, match="fewer than one batch of 2"):
        CalibrationBatcher(tmp_path / "one", 2, (32, 48))
    _write_images(tmp_path / "broken", [(40, 60)])
    (tmp_path / "broken" / "img99.png").write_bytes(b"\x89PNG truncated")
    batcher = CalibrationBatcher(tmp_path / "broken", 2, (32, 48))
    with pytest.raises(CalibrationError, match=r"img99.png is not a readable image"):
        list(batcher)
    with pytest.raises(ValueError, match="batch_size"):
        CalibrationBatcher(tmp_path / "one", 0, (32, 48))


def test_letterbox_keeps_aspect_and_content() -> None:
    image = np.zeros((10, 40, 3), np.uint8)
    image[:, :20] = (255, 0, 0)
    out = letterbox(image, (40, 40))
    assert out.shape == (40, 40, 3)
    assert tuple(out[0, 0]) == PAD_VALUE_RGB and tuple(out[39, 39]) == PAD_VALUE_RGB  # bars top / bottom
    assert tuple(out[20, 5]) == (255, 0, 0) and tuple(out[20, 35]) == (0, 0, 0)
    assert letterbox(out, (40, 40)) is not out  # always a fresh array


# ------------------------------------------------------------------ fallback decision
def test_tensorrt_is_really_missing_here_and_auto_falls_back() -> None:
    if PROBE.available:
        pytest.skip("TensorRT and a GPU are present: this test describes machines without them")
    assert "TensorRT is not installed" in (PROBE.problem or "")
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        import_tensorrt()
    choice = choose_backend("auto", "onnx", PROBE)
    assert choice.backend == "onnxruntime" and "TensorRT is not installed" in choice.reason
    with pytest.raises(EngineSelectionError, match="backend 'tensorrt' cannot run here: TensorRT is not installed"):
        choose_backend("tensorrt", "onnx", PROBE)


def test_engine_construction_fails_cleanly_without_tensorrt(tmp_path: Path) -> None:
    if PROBE.available:
        pytest.skip("TensorRT and a GPU are present")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        TensorRTEngine(model, TensorRTOptions(cache_dir=tmp_path))


def test_decision_with_tensorrt_present() -> None:
    # A probe value describing a machine with TensorRT and a GPU (stand-in for hardware that cannot
    # exist here; choose_backend is a pure function of it).
    present = TensorRTProbe("10.3.0", "Orin (compute 8.7)")
    assert choose_backend("auto", "onnx", present).backend == "tensorrt"
    assert choose_backend("tensorrt", "onnx", present).backend == "tensorrt"
    assert choose_backend("onnxruntime", "onnx", present).backend == "onnxruntime"
    assert choose_backend("auto", "checkpoint", present).backend == "torch"
    gpu_missing = TensorRTProbe("10.3.0", None, "no CUDA GPU 0 visible (0 device(s))")
    assert choose_backend("auto", "onnx", gpu_missing).backend == "onnxruntime"
    with pytest.raises(EngineSelectionError, match="no CUDA GPU"):
        choose_backend("tensorrt", "onnx", gpu_missing)


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int8 needs calibration_dir"):
        TensorRTOptions(precision="int8")
    with pytest.raises(ValueError, match="precision"):
        TensorRTOptions(precision="fp8")
    with pytest.raises(ValueError, match="workspace"):
        TensorRTOptions(workspace_bytes=1000)
    _write_images(tmp_path / "calib", [(40, 60)] * 3)
    options = TensorRTOptions(precision="int8", calibration_dir=tmp_path / "calib", calibration_batch_size=2)
    batcher = options.calibration_batcher()
    assert batcher is not None and batcher.batch_shape == (2, 512, 1024, 3)  # the profile's opt size
    assert TensorRTOptions().calibration_batcher() is None


# ------------------------------------------------------------------ shapes, dtypes, buffers
def test_shape_profile() -> None:
    profile = ShapeProfile(min_hw=(128, 256), opt_hw=(512, 1024), max_hw=(1024, 2048), max_batch=2)
    assert profile.input_shapes() == ((1, 128, 256, 3), (1, 512, 1024, 3), (2, 1024, 2048, 3))
    constraints = profile.constraints(output_stride=16, pad_to_stride=True)
    assert constraints.dynamic and constraints.max_batch == 2 and constraints.padded_hw(500, 1000) == (512, 1008)
    constraints.check(512, 1024)
    with pytest.raises(ValueError, match="larger than the engine maximum"):
        constraints.check(1080, 1920)
    with pytest.raises(ValueError, match="smaller than the engine minimum"):
        constraints.check(100, 1000)
    with pytest.raises(ValueError, match="exceeds the engine maximum"):
        constraints.check(512, 1024, batch=3)
    fixed = ShapeProfile(min_hw=(512, 1024), opt_hw=(512, 1024), max_hw=(512, 1024)).constraints(16, False)
    assert not fixed.dynamic and fixed.fixed_hw == (512, 1024)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(min_hw=(600, 64), opt_hw=(512, 1024))


def _metadata(hierarchy: Hierarchy) -> ModelMetadata:
    return ModelMetadata(hierarchy, hierarchy.classifier_names, "mobilenet_v2", 16)


def test_io_specs_for_an_input_shape(tmp_path: Path) -> None:
    iv2018 = load_hierarchy(HIERARCHIES / "iv2018.yaml")
    specs = io_specs(_metadata(iv2018), (1, 512, 1024, 3), {})
    names = ["image", "root", "drivable", "rider", "traffic_sign", "traffic_sign_front", "leaf"]
    assert [s.name for s in specs] == names
    assert specs[0].is_input and specs[0].shape == (1, 512, 1024, 3) and specs[0].nbytes == 512 * 1024 * 3
    for spec in specs[1:]:
        assert spec.shape == (1, 512, 1024) and spec.device_dtype == spec.host_dtype == np.uint8
    wide = tmp_path / "wide.yaml"
    wide.write_text(
        "name: wide\nclasses:\n"
        "  - {name: a, id: 0, parent: root, color: [0, 0, 0]}\n"
        "  - {name: b, id: 1000, parent: root, color: [1, 1, 1]}\n"
    )
    leaf = io_specs(_metadata(load_hierarchy(wide)), (2, 64, 96, 3), {"leaf": np.dtype(np.int32)})[-1]
    assert leaf.host_dtype == np.uint16 and leaf.device_dtype == np.int32 and leaf.nbytes == 2 * 64 * 96 * 4
    with pytest.raises(ValueError, match="B x H x W x 3"):
        io_specs(_metadata(iv2018), (512, 1024, 3), {})


def _cast_model(to: int) -> bytes:
    """image (uint8) -> Cast(float) -> Cast(``to``) -> leaf: the shape of the exporter's leaf tail."""
    nodes = [
        helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["as_float"], ["leaf"], to=to),
    ]
    graph = helper.make_graph(
        nodes,
        "tail",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["b", "h"])],
        [helper.make_tensor_value_info("leaf", to, ["b", "h"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


def test_uint16_output_becomes_int32_for_tensorrt() -> None:
    adapted, casts = adapt_for_tensorrt(_cast_model(TensorProto.UINT16))
    assert casts == {"leaf": np.dtype(np.int32)}
    model = onnx.load_from_string(adapted)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.INT32
    values = np.array([[0, 7, 200]], np.uint8)
    out = ort.InferenceSession(adapted, providers=["CPUExecutionProvider"]).run(None, {"image": values})[0]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out.astype(np.uint16), values.astype(np.uint16))
    unchanged = _cast_model(TensorProto.UINT8)
    assert adapt_for_tensorrt(unchanged) == (unchanged, {})


def test_shape_of_the_uint8_input_is_read_after_its_cast() -> None:
    # image (uint8) -> Shape (before the Cast, as the exporter orders it) and image -> Cast(float) -> Mul
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "as_float"], ["squared"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shape_first",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["b", 3])],
        [
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("squared", TensorProto.FLOAT, ["b", 3]),
        ],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    assert tensorrt_type_problems(original) == ["Shape node '' reads uint8 tensor 'image'"]
    adapted, casts = adapt_for_tensorrt(original)
    assert casts == {} and tensorrt_type_problems(adapted) == []
    model = onnx.load_from_string(adapted)
    onnx.checker.check_model(model, full_check=True)  # still topologically sorted
    assert [n.op_type for n in model.graph.node] == ["Cast", "Shape", "Mul"]
    values = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    shape, squared = ort.InferenceSession(adapted, providers=["CPUExecutionProvider"]).run(None, {"image": values})
    assert shape.tolist() == [2, 3] and squared.tolist() == (values.astype(np.float32) ** 2).tolist()


def test_type_problems_are_reported() -> None:
    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[1, 0])]
    graph = helper.make_graph(
        nodes,
        "uint8_transpose",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [2, 3])],
        [helper.make_tensor_value_info("t", TensorProto.UINT8, [3, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    assert tensorrt_type_problems(model) == ["Transpose node '' reads uint8 tensor 'image'"]
    assert tensorrt_type_problems(_cast_model(TensorProto.UINT16)) == ["tensor 'leaf' is uint16"]


def test_device_buffers_grow_only() -> None:
    # A bytearray-backed allocator standing in for cudaMalloc / cudaFree (no GPU can exist here);
    # DeviceBuffers only sees integer pointers and sizes, exactly as with CUDA.
    blocks: dict[int, bytearray] = {}
    freed: list[int] = []

    def allocate(nbytes: int) -> int:
        pointer = 0x1000 * (len(blocks) + len(freed) + 1)
        blocks[pointer] = bytearray(nbytes)
        return pointer

    def release(pointer: int) -> None:
        freed.append(pointer)
        del blocks[pointer]

    buffers = DeviceBuffers(allocate, release)
    first = buffers.ensure("image", 1000)
    assert buffers.ensure("image", 500) == first and len(blocks) == 1  # smaller: reuse, no allocation
    bigger = buffers.ensure("image", 4000)
    assert bigger != first and freed == [first] and len(blocks[bigger]) == 4000
    buffers.ensure("leaf", 10)
    buffers.release_all()
    assert blocks == {} and len(freed) == 3


# ------------------------------------------------------------------ real TensorRT (GPU machines only)
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hiseg_ros.engines.checkpoint import ModelConfig
    from training.export import export_random_init

    out = tmp_path_factory.mktemp("trt") / "iv2018_tiny.onnx"
    config = ModelConfig("mobilenet_v2", 16, 32, 1, 1)
    return export_random_init(load_hierarchy(HIERARCHIES / "iv2018.yaml"), out, config, seed=0)


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return min(float((a[n] == b[n]).mean()) for n in a)


@pytest.mark.gpu
@needs_gpu
def test_tensorrt_fp32_matches_onnxruntime_and_caches(tiny_onnx: Path, tmp_path: Path) -> None:
    from hiseg_ros.engines.onnxruntime_engine import OnnxRuntimeEngine

    profile = ShapeProfile(min_hw=(32, 32), opt_hw=(64, 96), max_hw=(256, 256), max_batch=2)
    options = TensorRTOptions(precision="fp32", cache_dir=tmp_path / "cache", profile=profile)
    engine = TensorRTEngine(tiny_onnx, options)
    assert not engine.cache_hit and engine.engine_path.is_file()
    reference = OnnxRuntimeEngine(tiny_onnx, prefer_gpu=False)
    for shape in [(64, 96, 3), (67, 101, 3), (2, 48, 80, 3)]:
        image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        got, expected = engine.infer(image), reference.infer(image)
        assert got.leaf.shape == shape[:-1] and got.leaf.dtype == np.uint8
        np.testing.assert_array_equal(got.leaf, engine.hierarchy.flatten(got.per_classifier))
        assert _agreement(got.per_classifier, expected.per_classifier) >= 0.999
        with_confidence = engine.infer(image, confidence=True)  # the float32 output, bound like the others
        np.testing.assert_allclose(
            with_confidence.confidence, reference.infer(image, confidence=True).confidence, atol=1e-3
        )
    engine.close()
    again = TensorRTEngine(tiny_onnx, options)
    assert again.cache_hit and again.engine_path == engine.engine_path
    fp16 = TensorRTEngine(tiny_onnx, dataclasses.replace(options, precision="fp16"))
    assert not fp16.cache_hit and fp16.engine_path != engine.engine_path  # precision is part of the key
    image = np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    assert _agreement(fp16.infer(image).per_classifier, reference.infer(image).per_classifier) >= 0.98


@pytest.mark.gpu
@needs_gpu
def test_tensorrt_int8_with_calibration(tiny_onnx: Path, tmp_path: Path) -> None:
    _write_images(tmp_path / "calib", [(120, 160)] * 4)
    profile = ShapeProfile(min_hw=(32, 32), opt_hw=(64, 96), max_hw=(128, 128))
    options = TensorRTOptions(
        precision="int8",
        cache_dir=tmp_path / "cache",
        profile=profile,
        calibration_dir=tmp_path / "calib",
        calibration_batch_size=2,
    )
    engine = TensorRTEngine(tiny_onnx, options)
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = engine.infer(image)
    assert out.leaf.shape == (64, 96)
    np.testing.assert_array_equal(out.leaf, engine.hierarchy.flatten(out.per_classifier))
    assert list((tmp_path / "cache").glob("*.calib"))  # calibration table written for the next build
    assert TensorRTEngine(tiny_onnx, options).cache_hit
