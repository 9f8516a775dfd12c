"""Inference rows of the GPU check: the exported model's graph (network + decisions + leaf map)
through the torch backend, ONNX Runtime and TensorRT, at each size, batch 1.

The model is a random-init checkpoint of the default training config's network (IV 2018
hierarchy, MobileNetV2, output stride 16, 256 shared channels): weights do not change the cost.
Variants, in the order they run:

* ``torch engine``: ``create_engine(checkpoint, backend="torch")``, ``Engine.infer`` on a numpy
  image, numpy decisions back (host copies included); fp32, the only precision that engine has.
* ``decision graph``: :class:`~hiseg_ros.engines.torch_graph.DecisionGraph`, the module the torch
  engine runs and the exporter exports, on device tensors (uint8 image in, decisions and leaf map
  out), with the network in fp16 on CUDA (fp32 on the CPU, where fp16 convolutions are slow);
  then the same captured in a CUDA graph.
* ``onnxruntime``: the exported ONNX file in a session with the CUDA provider (the CPU provider on
  ``--device cpu``), numpy in and out.
* ``tensorrt``: ``create_engine(onnx, backend="tensorrt", precision="fp16")``, ``Engine.infer``.
* ``decision graph, torch.compile``: last, as it is the slowest to set up and the one the node
  does not use.

The optional variants (CUDA graph, compile, ONNX Runtime, TensorRT) become ``skipped`` rows with
the reason when they cannot run here; a failing torch engine or eager graph is ``failed``.
"""

from __future__ import annotations

import contextlib
import io
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.gpucheck.report import FAILED, SKIPPED, Row, Timing, say_skip, time_calls
from hiseg_ros.engines import INPUT_NAME, ShapeProfile, create_engine, probe_tensorrt
from hiseg_ros.engines.checkpoint import ModelConfig, load_checkpoint, save_checkpoint
from hiseg_ros.engines.torch_graph import DecisionGraph
from hiseg_ros.hierarchy import load_hierarchy
from training import REPO

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"
# Rough upper bounds of the two slow optional steps (building one TensorRT engine, compiling two
# sizes): each starts only if that much of the time budget is left.
COMPILE_BUDGET_S = 150.0
TENSORRT_BUDGET_S = 180.0


@dataclass(frozen=True)
class InferenceSettings:
    device: str  # "cuda" or "cpu"
    sizes: tuple[tuple[int, int], ...]
    repeats: int
    warmup: int
    cuda_graphs: bool
    compile: bool
    deadline: float  # time.monotonic() by which the run should be done

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def precision(self) -> str:
        return "fp16" if self.cuda else "fp32"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


class HalfNetwork(nn.Module):
    """The network with float16 weights behind the decision graph's float32 normalisation: the
    normalised input is cast once, the logits come out in float16 and go to the graph's argmax."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x.half())


def measure_inference(settings: InferenceSettings, tmp: Path) -> list[Row]:
    """Every variant at every size (see the module docstring); ``tmp`` holds the model files."""
    hierarchy = load_hierarchy(HIERARCHY)
    config = ModelConfig()
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp / "gpu_check.pt", config.build(hierarchy), hierarchy, config)
    rows = torch_engine_rows(checkpoint, settings)
    graph = decision_graph(checkpoint, settings)
    rows += graph_rows(graph, settings)
    start = time.perf_counter()
    onnx_path, problem = export_onnx(checkpoint, tmp / "gpu_check.onnx")
    export_s = time.perf_counter() - start
    onnx_rows = onnxruntime_rows(onnx_path, problem, settings)
    onnx_rows += tensorrt_rows(onnx_path, problem, settings, tmp / "tensorrt")
    for row in onnx_rows:
        row.extra["export_s"] = export_s
    return rows + onnx_rows + compiled_rows(graph, settings)


def _row(what: str, size: tuple[int, int], precision: str, torch_fp16: bool) -> Row:
    return Row("infer", what, size[0], size[1], 1, precision, extra={"torch_fp16": torch_fp16})


def _fill(row: Row, timing: Timing, peak_mib: float | None = None, note: str = "") -> Row:
    row.median_ms, row.min_ms = timing.median_ms, timing.min_ms
    row.images_per_s = 1000.0 / timing.median_ms
    row.peak_gpu_mib = peak_mib
    row.note = note or f"{timing.samples} runs"
    return row


def _not_run(row: Row, status: str, reason: str) -> Row:
    row.status, row.note = status, reason
    return say_skip(row)


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip().splitlines()[0][:300]


@contextlib.contextmanager
def _gpu_peak(settings: InferenceSettings) -> Iterator[list[float | None]]:
    """Yields a one-item list that holds the peak torch-allocated GPU memory (MiB) afterwards."""
    peak: list[float | None] = [None]
    if settings.cuda:
        torch.cuda.reset_peak_memory_stats()
    yield peak
    if settings.cuda:
        peak[0] = torch.cuda.max_memory_allocated() / 2**20


def _image(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)


def _device_image(size: tuple[int, int], settings: InferenceSettings) -> torch.Tensor:
    return torch.from_numpy(_image(size)[None]).to(settings.device)


def torch_engine_rows(checkpoint: Path, settings: InferenceSettings) -> list[Row]:
    what = "torch engine, Engine.infer (numpy in/out)"
    rows = [_row(what, size, "fp32", False) for size in settings.sizes]
    device = "cuda:0" if settings.cuda else "cpu"
    try:
        engine, _ = create_engine(checkpoint, backend="torch", torch_device=device)
    except Exception as exc:
        return [_not_run(r, FAILED, f"create_engine: {_error(exc)}") for r in rows]
    with engine:
        for row, size in zip(rows, settings.sizes, strict=True):
            image = _image(size)
            try:
                with _gpu_peak(settings) as peak:
                    timing = time_calls(lambda image=image: engine.infer(image), **_counts(settings))
                _fill(row, timing, peak[0])
            except Exception as exc:
                _not_run(row, FAILED, _error(exc))
    return rows


def _counts(settings: InferenceSettings) -> dict:
    return {"repeats": settings.repeats, "warmup": settings.warmup, "sync": settings.sync}


def decision_graph(checkpoint: Path, settings: InferenceSettings) -> DecisionGraph:
    """The torch engine's module, on the device, with the network in the settings' precision."""
    loaded = load_checkpoint(checkpoint)
    graph = DecisionGraph(loaded.net, loaded.hierarchy).eval()
    if settings.precision == "fp16":
        graph.net = HalfNetwork(graph.net)
    return graph.to(settings.device)


def graph_rows(graph: DecisionGraph, settings: InferenceSettings) -> list[Row]:
    """Eager (required), then in a CUDA graph (optional)."""
    rows = []
    fp16 = settings.precision == "fp16"
    for size in settings.sizes:
        row = _row("decision graph, eager (device tensors)", size, settings.precision, fp16)
        x = _device_image(size, settings)
        try:
            with torch.inference_mode(), _gpu_peak(settings) as peak:
                timing = time_calls(lambda x=x: graph(x), **_counts(settings))
            rows.append(_fill(row, timing, peak[0]))
        except Exception as exc:
            rows.append(_not_run(row, FAILED, _error(exc)))
    for size in settings.sizes:
        row = _row("decision graph, CUDA graph (device tensors)", size, settings.precision, fp16)
        if not settings.cuda:
            rows.append(_not_run(row, SKIPPED, "CUDA graphs need --device cuda"))
            continue
        if not settings.cuda_graphs:
            rows.append(_not_run(row, SKIPPED, "--no-cuda-graphs"))
            continue
        try:
            with torch.inference_mode(), _gpu_peak(settings) as peak:
                replay = capture(graph, _device_image(size, settings))
                timing = time_calls(replay, **_counts(settings))
            rows.append(_fill(row, timing, peak[0]))
        except Exception as exc:
            rows.append(_not_run(row, SKIPPED, f"CUDA graph capture failed: {_error(exc)}"))
    return rows


def capture(graph: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """``graph(x)`` captured in a CUDA graph; the returned call copies a new input in and replays.

    Warm-up runs on a side stream first (cuDNN picks its algorithms, allocations settle), as
    ``torch.cuda.graph`` requires."""
    static_in = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            graph(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        static_out = graph(static_in)

    def replay() -> object:
        static_in.copy_(x)
        cuda_graph.replay()
        return static_out

    return replay


def compiled_rows(graph: DecisionGraph, settings: InferenceSettings) -> list[Row]:
    """``torch.compile`` (default mode, one specialisation per size); the first call's time is the compile time."""
    rows = []
    fp16 = settings.precision == "fp16"
    for size in settings.sizes:
        row = _row("decision graph, torch.compile (device tensors)", size, settings.precision, fp16)
        if not settings.compile:
            rows.append(_not_run(row, SKIPPED, "--no-compile (the default with --tiny: compiling takes minutes)"))
            continue
        if settings.left_s() < COMPILE_BUDGET_S / len(settings.sizes):
            rows.append(_not_run(row, SKIPPED, f"time budget: {settings.left_s():.0f} s left"))
            continue
        try:
            compiled = torch.compile(graph, dynamic=False)
            x = _device_image(size, settings)
            with torch.inference_mode(), _gpu_peak(settings) as peak:
                start = time.perf_counter()
                compiled(x)
                settings.sync()
                compile_s = time.perf_counter() - start
                timing = time_calls(lambda x=x, f=compiled: f(x), **_counts(settings))
            rows.append(_fill(row, timing, peak[0], f"{timing.samples} runs, compiled in {compile_s:.0f} s"))
        except Exception as exc:
            rows.append(_not_run(row, SKIPPED, f"torch.compile failed: {_error(exc)}"))
    return rows


def export_onnx(checkpoint: Path, out: Path) -> tuple[Path | None, str]:
    """``training.export.export_checkpoint`` (verified in ONNX Runtime when it imports); returns
    the file, or None and why there is none."""
    try:
        import onnx  # noqa: F401 - the exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return None, f"no ONNX export: {exc}"
    try:
        import onnxruntime  # noqa: F401

        verify = True
    except ImportError:
        verify = False
    from training.export import export_checkpoint

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            return export_checkpoint(checkpoint, out, verify=verify), ""
    except Exception as exc:
        return None, f"ONNX export failed: {_error(exc)}"


def onnxruntime_rows(onnx_path: Path | None, problem: str, settings: InferenceSettings) -> list[Row]:
    provider = "CUDAExecutionProvider" if settings.cuda else "CPUExecutionProvider"
    what = f"onnxruntime {provider}, session.run (numpy in/out)"
    rows = [_row(what, size, "fp32", False) for size in settings.sizes]
    if onnx_path is None:
        return [_not_run(r, SKIPPED, problem) for r in rows]
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [_not_run(r, SKIPPED, f"onnxruntime does not import: {exc}") for r in rows]
    available = ort.get_available_providers()
    if provider not in available:
        reason = f"onnxruntime {ort.__version__} has no {provider} (available: {', '.join(available)})"
        return [_not_run(r, SKIPPED, reason) for r in rows]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    except Exception as exc:
        return [_not_run(r, SKIPPED, f"onnxruntime session: {_error(exc)}") for r in rows]
    if session.get_providers()[0] != provider:
        reason = f"{provider} did not load (session providers: {', '.join(session.get_providers())})"
        return [_not_run(r, SKIPPED, reason) for r in rows]
    for row, size in zip(rows, settings.sizes, strict=True):
        feed = {INPUT_NAME: _image(size)[None]}
        try:
            _fill(row, time_calls(lambda feed=feed: session.run(None, feed), **_counts(settings)))
        except Exception as exc:
            _not_run(row, SKIPPED, f"onnxruntime run: {_error(exc)}")
    return rows


def tensorrt_rows(onnx_path: Path | None, problem: str, settings: InferenceSettings, cache: Path) -> list[Row]:
    rows = [_row("tensorrt engine, Engine.infer (numpy in/out)", s, "fp16", False) for s in settings.sizes]
    if onnx_path is None:
        return [_not_run(r, SKIPPED, problem) for r in rows]
    probe = probe_tensorrt(0)
    if not probe.available:
        return [_not_run(r, SKIPPED, f"TensorRT cannot run here: {probe.problem}") for r in rows]
    if settings.left_s() < TENSORRT_BUDGET_S:
        return [_not_run(r, SKIPPED, f"time budget: {settings.left_s():.0f} s left") for r in rows]
    heights, widths = [h for h, _ in settings.sizes], [w for _, w in settings.sizes]
    profile = ShapeProfile(
        min_hw=(min(heights), min(widths)), opt_hw=settings.sizes[0], max_hw=(max(heights), max(widths))
    )
    start = time.perf_counter()
    try:
        engine, _ = create_engine(
            onnx_path, backend="tensorrt", precision="fp16", cache_dir=cache, profile=profile, probe=probe
        )
    except Exception as exc:
        return [_not_run(r, SKIPPED, f"TensorRT engine: {_error(exc)}") for r in rows]
    build_s = time.perf_counter() - start
    with engine:
        for row, size in zip(rows, settings.sizes, strict=True):
            image = _image(size)
            try:
                timing = time_calls(lambda image=image: engine.infer(image), **_counts(settings))
                _fill(row, timing, None, f"{timing.samples} runs, engine built in {build_s:.0f} s")
            except Exception as exc:
                _not_run(row, SKIPPED, f"TensorRT run: {_error(exc)}")
    return rows
