"""TensorRT backend: build (or load from the cache) an engine from the exported ONNX model, run it
with device buffers on a CUDA stream.

TensorRT and cuda-python are imported only inside functions: the development machines have
neither (and no GPU), and the node must still import this package there. Everything that does not
need them lives in pure modules tested on the CPU: the cache key and cache (``engine_cache``), the
calibration batcher (``calibration``), shapes / dtypes / buffer bookkeeping and the graph
adaptation (``bindings``). What remains here is the TensorRT Python API (written for 10.x; every
call used also exists in 8.5+, i.e. JetPack 5) and CUDA runtime calls, exercised by the ``gpu``
tests on a machine that has both.

CUDA memory and streams come from cuda-python (``cuda.bindings.runtime``, or the older
``cuda.cudart``): a small, TensorRT-agnostic dependency, unlike requiring a CUDA build of torch.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from .base import Engine, InputShapeError, ModelLoadError
from .bindings import DeviceBuffers, ShapeProfile, adapt_for_tensorrt, io_specs, tensorrt_type_problems
from .calibration import CalibrationBatcher
from .engine_cache import EngineCache, EngineCacheKey
from .metadata import INPUT_NAME, ModelMetadata, read_onnx_metadata

__all__ = [
    "PRECISIONS",
    "TENSORRT_PYTHON_DEPENDENCIES",
    "CudaRuntime",
    "TensorRTEngine",
    "TensorRTOptions",
    "TensorRTProbe",
    "TensorRTUnavailableError",
    "build_serialized_engine",
    "default_cache_dir",
    "import_tensorrt",
    "missing_python_dependencies",
    "probe_tensorrt",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTUnavailableError(RuntimeError):
    """TensorRT, cuda-python or a CUDA GPU is missing on this machine."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "hiseg_ros" / "engines"


@dataclass(frozen=True)
class TensorRTOptions:
    """How to build and run the engine. ``calibration_dir`` is required for ``int8``."""

    precision: str = "fp16"
    cache_dir: Path = field(default_factory=default_cache_dir)
    workspace_bytes: int = 1 << 30
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    calibration_dir: Path | None = None
    calibration_batch_size: int = 8
    calibration_max_batches: int | None = 64
    device: int = 0
    pad_to_stride: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workspace_bytes < 1 << 20:
            raise ValueError(f"workspace_bytes must be at least 1 MiB, got {self.workspace_bytes}")
        if self.precision == "int8" and self.calibration_dir is None:
            raise ValueError("precision int8 needs calibration_dir: a folder of representative camera images")

    def calibration_batcher(self) -> CalibrationBatcher | None:
        if self.precision != "int8" or self.calibration_dir is None:
            return None
        return CalibrationBatcher(
            Path(self.calibration_dir),
            self.calibration_batch_size,
            self.profile.opt_hw,
            self.calibration_max_batches,
        )


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailableError` saying why not."""
    try:
        return importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError from a broken libnvinfer install
        raise TensorRTUnavailableError(
            f"TensorRT is not installed (import tensorrt failed: {exc}); "
            "it comes with JetPack or from NVIDIA's package index"
        ) from None


class CudaRuntime:
    """The few CUDA runtime calls the engine needs, with errors turned into exceptions."""

    def __init__(self, device: int = 0) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6
            except ImportError as exc:
                raise TensorRTUnavailableError(
                    f"cuda-python is not installed ({exc}): pip install cuda-python (device buffers, streams)"
                ) from None
        self._rt = cudart
        count = self._check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1 or device >= count:
            raise TensorRTUnavailableError(f"no CUDA GPU {device} visible ({count} device(s))")
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self.device = device

    def _check(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            message = self._rt.cudaGetErrorString(err)[1]
            message = message.decode() if isinstance(message, bytes) else str(message)
            raise RuntimeError(f"{what} failed: {message} ({int(err)})")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def device_properties(self) -> tuple[str, str]:
        """(GPU name, compute capability "major.minor")."""
        props = self._check(self._rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name.strip(), f"{props.major}.{props.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, pointer: int) -> None:
        self._check(self._rt.cudaFree(pointer), "cudaFree")

    def stream_create(self) -> Any:
        return self._check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream), "cudaMemcpyAsync")


@dataclass(frozen=True)
class TensorRTProbe:
    """Whether the TensorRT backend can run here; ``problem`` says why not."""

    tensorrt_version: str | None = None
    gpu: str | None = None
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.problem is None


#: Python modules the TensorRT backend imports besides ``tensorrt``: (module, what for, how to install).
#: ``cuda`` is checked through :class:`CudaRuntime` (two module layouts, and it needs a GPU).
TENSORRT_PYTHON_DEPENDENCIES: tuple[tuple[str, str, str], ...] = (
    ("onnx", "graph adaptation before the engine build", "pip install onnx"),
)


def missing_python_dependencies(import_module: Any = importlib.import_module) -> list[str]:
    """What in :data:`TENSORRT_PYTHON_DEPENDENCIES` does not import, each with the install hint."""
    missing = []
    for module, purpose, install in TENSORRT_PYTHON_DEPENDENCIES:
        try:
            import_module(module)
        except Exception as exc:  # ImportError, or whatever a broken install raises
            missing.append(f"{module} ({purpose}) does not import: {exc}; {install}")
    return missing


def probe_tensorrt(device: int = 0) -> TensorRTProbe:
    """Import TensorRT and everything the backend needs with it (onnx, cuda-python) and look for GPU
    ``device``, without building anything. Every missing piece is named in ``problem``, so that
    ``backend: auto`` never chooses a TensorRT that then fails to load the model."""
    try:
        trt = import_tensorrt()
    except TensorRTUnavailableError as exc:
        return TensorRTProbe(problem=str(exc))
    version = str(getattr(trt, "__version__", "?"))
    problems = missing_python_dependencies()
    gpu = None
    try:
        name, capability = CudaRuntime(device).device_properties()
        gpu = f"{name} (compute {capability})"
    except (TensorRTUnavailableError, RuntimeError) as exc:
        problems.append(str(exc))
    if problems:
        return TensorRTProbe(version, gpu, f"TensorRT {version} imports, but " + "; ".join(problems))
    return TensorRTProbe(version, gpu)


def _make_entropy_calibrator(trt: ModuleType, cuda: CudaRuntime, batcher: CalibrationBatcher, table: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed by ``batcher``; the class is defined here because its base
    class only exists once TensorRT is imported. ``table`` caches the calibration result."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batcher)
            self._device = cuda.malloc(batcher.batch_nbytes)
            self._stream = cuda.stream_create()

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None  # tells TensorRT the data is exhausted
            cuda.to_device(self._device, batch, self._stream)
            cuda.synchronize(self._stream)
            return [self._device]

        def read_calibration_cache(self) -> bytes | None:
            return table.read_bytes() if table.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(table, bytes(cache))

        def release(self) -> None:
            cuda.free(self._device)
            cuda.stream_destroy(self._stream)

    return EntropyCalibrator()


def build_serialized_engine(
    trt: ModuleType,
    onnx_bytes: bytes,
    options: TensorRTOptions,
    source: str | Path,
    calibrator: Any = None,
    calibration_shape: tuple[int, ...] | None = None,
) -> bytes:
    """Parse ONNX, configure precision / workspace / profile, build and serialize an engine."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # Explicit batch: the only mode of TensorRT 10 (flag deprecated, still accepted), opt-in on 8.x.
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(source, f"TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *options.profile.input_shapes())
    config.add_optimization_profile(profile)
    if options.precision == "int8":
        if calibrator is None or calibration_shape is None:
            raise ValueError("int8 build needs a calibrator and its batch shape")
        config.set_flag(trt.BuilderFlag.INT8)
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(INPUT_NAME, calibration_shape, calibration_shape, calibration_shape)
        config.set_calibration_profile(calibration_profile)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(source, f"TensorRT failed to build a {options.precision} engine (see its log)")
    return bytes(serialized)


class TensorRTEngine(Engine):
    """The exported model as a TensorRT engine on one GPU; built at construction unless cached."""

    def __init__(self, model_path: str | Path, options: TensorRTOptions | None = None) -> None:
        options = options or TensorRTOptions()
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(path, "model file does not exist")
        trt = import_tensorrt()
        cuda = CudaRuntime(options.device)
        model_bytes = path.read_bytes()
        meta = read_onnx_metadata(model_bytes, path)
        adapted, self._host_casts = adapt_for_tensorrt(model_bytes)
        gpu_name, capability = cuda.device_properties()
        batcher = options.calibration_batcher()
        key = EngineCacheKey(
            model_sha256=hashlib.sha256(model_bytes).hexdigest(),
            tensorrt_version=str(trt.__version__),
            gpu_name=gpu_name,
            compute_capability=capability,
            precision=options.precision,
            profile=options.profile.input_shapes(),
            workspace_bytes=options.workspace_bytes,
            calibration=batcher.fingerprint() if batcher else "",
            model_name=path.stem,
        )
        cache = EngineCache(options.cache_dir)
        self.cache_key = key
        self.cache_hit = False
        self._cuda = cuda
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        plan = cache.load(key)
        engine = self._runtime.deserialize_cuda_engine(plan) if plan is not None else None
        if plan is not None and engine is None:
            logger.warning("cached engine %s does not deserialize: rebuilding", cache.engine_path(key))
            cache.invalidate(key)
        self.cache_hit = engine is not None
        if engine is None:
            plan = self._build(trt, adapted, options, path, batcher, key)
            cache.store(key, plan)
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise ModelLoadError(path, "TensorRT built an engine it cannot deserialize")
        self.engine_path = cache.engine_path(key)
        self.metadata: ModelMetadata = meta
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = cuda.stream_create()
        self._buffers = DeviceBuffers(cuda.malloc, cuda.free)
        self._check_io(trt, path)
        super().__init__(
            meta.hierarchy,
            f"tensorrt[{options.precision}, {gpu_name}, TensorRT {trt.__version__}]",
            options.profile.constraints(meta.output_stride, options.pad_to_stride),
            has_confidence=bool(meta.confidence_output),
        )

    def _build(
        self,
        trt: ModuleType,
        onnx_bytes: bytes,
        options: TensorRTOptions,
        path: Path,
        batcher: CalibrationBatcher | None,
        key: EngineCacheKey,
    ) -> bytes:
        problems = tensorrt_type_problems(onnx_bytes)
        if problems:
            raise ModelLoadError(path, f"graph breaks TensorRT's type rules: {'; '.join(problems[:5])}")
        logger.info("building TensorRT %s engine for %s (minutes on a Jetson; cached afterwards)", key.precision, path)
        if batcher is None:
            return build_serialized_engine(trt, onnx_bytes, options, path)
        table = Path(options.cache_dir) / f"{key.file_stem}.calib"
        calibrator = _make_entropy_calibrator(trt, self._cuda, batcher, table)
        try:
            return build_serialized_engine(trt, onnx_bytes, options, path, calibrator, batcher.batch_shape)
        finally:
            calibrator.release()

    def _check_io(self, trt: ModuleType, path: Path) -> None:
        """The engine's tensors must be the model's: names, directions and dtypes."""
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        specs = io_specs(self.metadata, (1, 64, 64, 3), self._host_casts)  # any size: names and dtypes only
        expected = {s.name: s for s in specs}
        if sorted(names) != sorted(expected):
            raise ModelLoadError(path, f"engine tensors {names} differ from the model's {sorted(expected)}")
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if is_input != expected[name].is_input or dtype != expected[name].device_dtype:
                raise ModelLoadError(path, f"engine tensor {name!r} is {dtype}, expected {expected[name].device_dtype}")

    def _run(self, batch: np.ndarray, confidence: bool) -> Mapping[str, np.ndarray]:
        # The engine computes every output; without ``confidence`` its map is not copied to the host.
        if not self._context.set_input_shape(INPUT_NAME, batch.shape):
            raise InputShapeError(f"TensorRT rejected input shape {batch.shape}")
        hosts: dict[str, tuple[np.ndarray, int, np.dtype]] = {}
        for spec in io_specs(self.metadata, batch.shape, self._host_casts):
            pointer = self._buffers.ensure(spec.name, spec.nbytes)
            self._context.set_tensor_address(spec.name, pointer)
            if spec.is_input:
                self._cuda.to_device(pointer, batch, self._stream)
                continue
            if tuple(self._context.get_tensor_shape(spec.name)) != spec.shape:
                raise RuntimeError(f"engine output {spec.name!r} has shape {self._context.get_tensor_shape(spec.name)}")
            if confidence or spec.name != self.metadata.confidence_output:
                hosts[spec.name] = (np.empty(spec.shape, spec.device_dtype), pointer, spec.host_dtype)
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for host, pointer, _ in hosts.values():
            self._cuda.to_host(host, pointer, self._stream)
        self._cuda.synchronize(self._stream)  # also keeps `batch` alive until the copy is done
        return {name: host.astype(dtype, copy=False) for name, (host, _, dtype) in hosts.items()}

    def close(self) -> None:
        if getattr(self, "_buffers", None) is not None:
            self._buffers.release_all()
            self._cuda.stream_destroy(self._stream)
            self._buffers = None  # type: ignore[assignment]
