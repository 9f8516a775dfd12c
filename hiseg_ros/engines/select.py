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

import re
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
    "parse_device",
]

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format
_PICKLE_MAGIC = b"\x80"  # legacy torch.save / plain pickle
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class EngineSelectionError(ValueError):
    """The requested backend cannot run this model on this machine; the message says why."""


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def parse_device(device: str) -> tuple[str, int]:
    """``"auto" | "cpu" | "cuda" | "cuda:N"`` -> (kind, GPU index); ValueError naming the parameter.

    ``auto``: a GPU backend uses GPU 0 when it has one, else the CPU; ``cuda``: GPU 0, and a backend
    without a GPU is an error, never a silent CPU run; ``cpu``: the CPU only.
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N (N = GPU index)")
    kind, _, index = device.partition(":")
    return kind, int(index or 0)


def model_kind(path: str | Path) -> str:
    """``"checkpoint"`` (a torch.save file) or ``"onnx"``, from the file's first bytes."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "model file does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    return "checkpoint" if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)) else "onnx"


def choose_backend(
    requested: str, kind: str, probe: TensorRTProbe | None = None, device: str = "auto"
) -> BackendChoice:
    """Which backend runs a model of ``kind`` on ``device`` (:func:`parse_device`); ``probe`` is
    needed when TensorRT is a candidate (it checks TensorRT's Python dependencies and the GPU)."""
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
    if device == "cpu":
        if requested == "tensorrt":
            raise EngineSelectionError("backend 'tensorrt' runs on a GPU only, but device is 'cpu'")
        return BackendChoice("onnxruntime", "auto: ONNX Runtime, because device is 'cpu'")
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
    device: str = "auto",
    torch_device: str | None = None,
    probe: TensorRTProbe | None = None,
) -> tuple[Engine, str]:
    """Load ``model_path`` with the chosen backend; returns the engine and why it was chosen.

    ``precision`` and the TensorRT options (``cache_dir``, ``profile``, ``workspace_bytes``,
    ``calibration_dir``) are used by TensorRT (and ``fp16`` by ONNX Runtime's TensorRT provider);
    the other backends run fp32 and say so in the reason. ``probe`` replaces the TensorRT probe.
    ``spin_wait=False`` stops ONNX Runtime's CPU threads from busy-waiting between runs (for
    processes that share the cores with other work, like the node). ``device`` (:func:`parse_device`)
    is the GPU of TensorRT and of ONNX Runtime's GPU providers, and torch's device (``torch_device``,
    the older spelling for the torch backend, overrides it).
    """
    device_kind, gpu_device = parse_device(device if torch_device is None else torch_device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = model_kind(model_path)
    if probe is None and kind == "onnx" and backend in ("auto", "tensorrt"):
        probe = probe_tensorrt(gpu_device) if device_kind != "cpu" else None
    choice = choose_backend(backend, kind, probe, device_kind)
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
            prefer_gpu=device_kind != "cpu",
            device_id=gpu_device,
        )
        engine = ort_engine
        gpu = any(p != "CPUExecutionProvider" for p in ort_engine.providers)
        if device_kind == "cuda" and not gpu:
            raise EngineSelectionError(
                f"device {device!r}: ONNX Runtime runs on the CPU only here (providers "
                f"{', '.join(ort_engine.providers)}); install onnxruntime-gpu, or set device 'auto' or 'cpu'"
            )
        runs_requested = precision == "fp32" or (
            precision == "fp16" and "TensorrtExecutionProvider" in ort_engine.providers
        )
        detail = f"providers {', '.join(ort_engine.providers)}" + (
            "" if gpu else f", {intra_op_threads or 'default'} threads"
        )
    else:
        from .torch_engine import TorchEngine

        torch_device = torch_device_for(device_kind, gpu_device)
        engine = TorchEngine(model_path, device=torch_device, threads=intra_op_threads, pad_to_stride=pad_to_stride)
        runs_requested = precision == "fp32"
        detail = f"device {torch_device}"
    note = "" if runs_requested else f"; precision {precision} is a TensorRT option, this backend runs fp32"
    return engine, f"{choice.reason}; {detail}{note}"


def torch_device_for(kind: str, index: int) -> str:
    """The torch device for a parsed ``device``: ``auto`` is GPU 0 when torch sees one, else the CPU."""
    if kind == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "auto":
        return "cuda:0" if count else "cpu"
    if index >= count:
        raise EngineSelectionError(f"device 'cuda:{index}': torch sees {count} CUDA GPU(s)")
    return f"cuda:{index}"
