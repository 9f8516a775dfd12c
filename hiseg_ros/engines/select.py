"""Choosing and creating the backend: ``create_engine(model, backend="auto", ...) -> (engine, reason)``.

``auto`` takes TensorRT when it imports and a CUDA GPU is visible, else ONNX Runtime (a training
checkpoint can only go to the PyTorch backend). An explicit choice that cannot work here is an
error that says why, never a silent fallback: a node configured for TensorRT on a vehicle must not
quietly run ten times slower on the CPU. The reason string is meant for the node's start-up log.

The decision itself (:func:`choose_backend`) is a pure function of the request, the model kind and
a :class:`TensorRTProbe`, so it is tested without TensorRT; probing imports nothing heavy unless
TensorRT is actually a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import Engine, ModelLoadError
from .bindings import ShapeProfile
from .tensorrt_engine import PRECISIONS, TensorRTProbe, default_cache_dir, probe_tensorrt

__all__ = [
    "BACKENDS",
    "BackendChoice",
    "EngineSelectionError",
    "choose_backend",
    "create_engine",
    "model_kind",
]

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format
_PICKLE_MAGIC = b"\x80"  # legacy torch.save / plain pickle


class EngineSelectionError(ValueError):
    """The requested backend cannot run this model on this machine; the message says why."""


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def model_kind(path: str | Path) -> str:
    """``"checkpoint"`` (a torch.save file) or ``"onnx"``, from the file's first bytes."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "model file does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    return "checkpoint" if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)) else "onnx"


def choose_backend(requested: str, kind: str, probe: TensorRTProbe | None = None) -> BackendChoice:
    """Which backend runs a model of ``kind``; ``probe`` is needed when TensorRT is a candidate."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if kind == "checkpoint":
        if requested == "torch":
            return BackendChoice("torch", "PyTorch requested")
        if requested == "auto":
            return BackendChoice("torch", "auto: the model is a training checkpoint, only the PyTorch backend reads it")
        raise EngineSelectionError(
            f"backend {requested!r} needs an exported ONNX model, got a training checkpoint "
            "(export it with: python -m training.export --checkpoint CKPT --out model.onnx)"
        )
    if requested == "torch":
        raise EngineSelectionError("backend 'torch' needs the training checkpoint (.pt), got an ONNX model")
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", "ONNX Runtime requested")
    if probe is None:
        raise ValueError("choose_backend: a TensorRT probe is needed for backend 'tensorrt' / 'auto'")
    if requested == "tensorrt":
        if not probe.available:
            raise EngineSelectionError(
                f"backend 'tensorrt' cannot run here: {probe.problem}. Use backend 'onnxruntime' or 'auto'"
            )
        return BackendChoice("tensorrt", f"TensorRT {probe.tensorrt_version} requested, GPU {probe.gpu}")
    if probe.available:
        return BackendChoice("tensorrt", f"auto: TensorRT {probe.tensorrt_version} and GPU {probe.gpu} available")
    return BackendChoice("onnxruntime", f"auto: ONNX Runtime, because {probe.problem}")


def create_engine(
    model_path: str | Path,
    backend: str = "auto",
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    *,
    intra_op_threads: int | None = None,
    spin_wait: bool = True,
    pad_to_stride: bool = False,
    profile: ShapeProfile | None = None,
    workspace_bytes: int = 1 << 30,
    calibration_dir: str | Path | None = None,
    gpu_device: int = 0,
    torch_device: str = "cpu",
    probe: TensorRTProbe | None = None,
) -> tuple[Engine, str]:
    """Load ``model_path`` with the chosen backend; returns the engine and why it was chosen.

    ``precision`` and the TensorRT options (``cache_dir``, ``profile``, ``workspace_bytes``,
    ``calibration_dir``) are used by TensorRT (and ``fp16`` by ONNX Runtime's TensorRT provider);
    the other backends run fp32 and say so in the reason. ``probe`` replaces the TensorRT probe.
    ``spin_wait=False`` stops ONNX Runtime's CPU threads from busy-waiting between runs (for
    processes that share the cores with other work, like the node).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = model_kind(model_path)
    if probe is None and kind == "onnx" and backend in ("auto", "tensorrt"):
        probe = probe_tensorrt(gpu_device)
    choice = choose_backend(backend, kind, probe)
    engine: Engine
    if choice.backend == "tensorrt":
        from .tensorrt_engine import TensorRTEngine, TensorRTOptions

        options = TensorRTOptions(
            precision=precision,
            cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            workspace_bytes=workspace_bytes,
            profile=profile or ShapeProfile(),
            calibration_dir=Path(calibration_dir) if calibration_dir is not None else None,
            device=gpu_device,
            pad_to_stride=pad_to_stride,
        )
        trt_engine = TensorRTEngine(model_path, options)
        cached = "engine from cache" if trt_engine.cache_hit else "engine built and cached"
        return trt_engine, f"{choice.reason}; {precision}, {cached} at {trt_engine.engine_path}"
    if choice.backend == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        ort_engine = OnnxRuntimeEngine(
            model_path,
            intra_op_threads=intra_op_threads,
            spin_wait=spin_wait,
            precision=precision,
            cache_dir=cache_dir,
            pad_to_stride=pad_to_stride,
        )
        engine = ort_engine
        gpu = any(p != "CPUExecutionProvider" for p in ort_engine.providers)
        runs_requested = precision == "fp32" or (
            precision == "fp16" and "TensorrtExecutionProvider" in ort_engine.providers
        )
        detail = f"providers {', '.join(ort_engine.providers)}" + (
            "" if gpu else f", {intra_op_threads or 'default'} threads"
        )
    else:
        from .torch_engine import TorchEngine

        engine = TorchEngine(model_path, device=torch_device, threads=intra_op_threads, pad_to_stride=pad_to_stride)
        runs_requested = precision == "fp32"
        detail = f"device {torch_device}"
    note = "" if runs_requested else f"; precision {precision} is a TensorRT option, this backend runs fp32"
    return engine, f"{choice.reason}; {detail}{note}"
