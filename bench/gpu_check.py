"""GPU check: training throughput and inference latency of the GPU path, in one command.

Prints one table (and the targets of docs/BENCHMARKS.md) and writes the same as JSON (``--json``):

* training: the real loop (``training.fit.train.train``) at 512x1024 crops for batch sizes 8
  and 16 on synthetic scenes generated on the spot, with the loop's own mixed precision on CUDA:
  images/s, s per iteration, peak GPU memory, loader workers, and the share of the wall time the
  loop waited for data (:mod:`bench.gpucheck.training`);
* inference, batch 1 at 512x1024 and 1024x2048: the torch engine, its decision graph in fp16
  (eager, in a CUDA graph, ``torch.compile``), ONNX Runtime's CUDA provider and TensorRT fp16:
  median latency and fps, decisions and leaf map included (:mod:`bench.gpucheck.inference`).

``--device cpu --tiny`` runs the same code on tiny sizes in about a minute (the test suite does).

Needs: Python >= 3.10; PyTorch >= 2.5 (CUDA build for ``--device cuda``); numpy and PyYAML; for
the training rows also opencv-python (cv2), Pillow and matplotlib; for the ONNX Runtime and
TensorRT rows onnx + onnxscript (the exporter), onnxruntime(-gpu), TensorRT + cuda-python. Each
missing optional part becomes a ``skipped`` row saying why. Not needed: ROS (nothing imported
here loads rclpy), the project virtual environment, a network connection, pretrained weights
(random init). Run from anywhere in the source tree: ``python bench/gpu_check.py --help``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere in the source tree

import torch  # noqa: E402 - after the path

from bench.gpucheck.inference import InferenceSettings, measure_inference  # noqa: E402
from bench.gpucheck.report import (  # noqa: E402
    FAILED,
    check_targets,
    format_table,
    format_targets,
    write_json,
)
from bench.gpucheck.training import TrainSettings, measure_training  # noqa: E402

DEFAULT_CONFIG = REPO / "config" / "training" / "default.yaml"
FULL = {"batches": [8, 16], "crop": [512, 1024], "iterations": 60, "sizes": ["512x1024", "1024x2048"]}
FULL |= {"repeats": 100, "infer_warmup": 10}
TINY = {"batches": [1, 2], "crop": [64, 128], "warmup": 1, "iterations": 2, "sizes": ["64x128", "128x256"]}
TINY |= {"repeats": 2, "infer_warmup": 1, "num_workers": 1}


def size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}") from None
    return h, w


def default_json() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else REPO / "runs" / "gpu_check" / "gpu_check.json"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, 1-2 iterations, batch 1-2 (the CPU smoke run)")
    p.add_argument("--json", type=Path, default=None, help="output JSON (default: $OUT/gpu_check.json or runs/)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (datasets: the synthetic 4)")
    p.add_argument("--batches", type=int, nargs="+", help="training batch sizes (8 16; --tiny: 1 2)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="training crop (512 1024)")
    p.add_argument("--warmup", type=int, help="training iterations not timed (5 + 2 x workers; --tiny: 1)")
    p.add_argument("--iterations", type=int, help="timed training iterations (60; --tiny: 2)")
    p.add_argument("--num-workers", type=int, help="loader workers (min(12, CPUs - 2); --tiny: 1)")
    p.add_argument("--sizes", type=size, nargs="+", help="inference sizes (512x1024 1024x2048)")
    p.add_argument("--repeats", type=int, help="timed inference calls per row (100; --tiny: 2)")
    p.add_argument("--infer-warmup", type=int, help="inference calls not timed (10; --tiny: 1)")
    p.add_argument(
        "--train-sync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="synchronise CUDA before each batch fetch, so the data wait is GPU idle time (default)",
    )
    p.add_argument(
        "--profile-steps",
        type=int,
        default=5,
        help="warm-up steps of the first training run under torch.profiler on CUDA: the top ops (0: none)",
    )
    p.add_argument(
        "--loss-form",
        choices=("auto", "gathered"),
        default="auto",
        help="gathered: the loss's CPU form (boolean gathers, interpolate) on the GPU too, to compare",
    )
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="(default: not --tiny)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    p.add_argument("--budget-s", type=float, default=480.0, help="the slow optional steps start only within it")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset from the full or the tiny defaults."""
    defaults = TINY if args.tiny else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, [size(v) for v in value] if key == "sizes" else value)
    if args.num_workers is None:
        args.num_workers = min(12, max(1, (os.cpu_count() or 1) - 2))
    if args.warmup is None:
        # The loop's DataLoader keeps 2 batches per worker in flight: those may all be ready when
        # the timing starts, so they are not timed either (else the data wait would look smaller).
        args.warmup = 5 + 2 * args.num_workers
    if args.compile is None:
        args.compile = not args.tiny
    if args.json is None:
        args.json = default_json()
    return args


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "device": device,
        "gpu": None,
        "gpu_memory_gib": None,
        "bf16_supported": None,
        "cpu_count": os.cpu_count(),
        "load_1min": os.getloadavg()[0],
        "onnxruntime": None,
        "tensorrt_importable": importlib.util.find_spec("tensorrt") is not None,
        "command": [sys.executable, *sys.argv],
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": props.total_memory / 2**30}
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        env["onnxruntime"] = f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})"
    return env


def main(argv: list[str] | None = None) -> int:
    args = resolve(parser().parse_args(argv))
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device cuda, but torch {torch.__version__} sees no CUDA GPU (built for CUDA "
            f"{torch.version.cuda}); run `python bench/gpu_check.py --device cpu --tiny` for the CPU smoke run",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    env = environment(args.device)
    print(
        f"gpu check: python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda']}), device {args.device}"
        f"{' ' + env['gpu'] if env['gpu'] else ''}, {env['cpu_count']} CPUs, load {env['load_1min']:.2f}"
        f"{', --tiny' if args.tiny else ''}",
        flush=True,
    )
    rows = []
    train_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        if not args.skip_train:
            crop = (args.crop[0], args.crop[1])
            print(
                f"training: {args.config.name}, crop {crop[0]}x{crop[1]}, batches {args.batches}, "
                f"{args.warmup} warm-up + {args.iterations} timed iterations, {args.num_workers} loader workers",
                flush=True,
            )
            settings = TrainSettings(
                args.device,
                args.config,
                crop,
                tuple(args.batches),
                args.warmup,
                args.iterations,
                args.num_workers,
                args.train_sync,
                args.profile_steps,
                args.loss_form,
            )
            start = time.monotonic()
            train_rows, train_info = measure_training(settings, Path(tmp))
            train_info["wall_s"] = time.monotonic() - start
            rows += train_rows
            amp = sorted({r.precision for r in train_rows if r.status == "ok"})
            if env["bf16_supported"] and "bf16 AMP" not in amp:
                print(f"  note: bf16 is supported here, but the loop ran {', '.join(amp) or '-'} (no bf16 switch)")
        if not args.skip_infer:
            sizes = ", ".join(f"{h}x{w}" for h, w in args.sizes)
            print(f"inference: {sizes}, {args.infer_warmup} warm-up + {args.repeats} timed calls each", flush=True)
            settings = InferenceSettings(
                args.device,
                tuple(args.sizes),
                args.repeats,
                args.infer_warmup,
                args.cuda_graphs,
                args.compile,
                started + args.budget_s,
            )
            start = time.monotonic()
            rows += measure_inference(settings, Path(tmp))
            env["inference_wall_s"] = time.monotonic() - start
    full_size_cuda = args.device == "cuda" and not args.tiny
    targets = check_targets(rows, full_size_cuda)
    env["wall_s"] = time.monotonic() - started
    print()
    print(format_table(rows))
    print()
    print(format_targets(targets, full_size_cuda))
    settings_json = {k: v for k, v in vars(args).items() if k != "json"} | {"train": train_info}
    settings_json |= {"config": str(args.config), "sizes": [list(s) for s in args.sizes]}
    path = write_json(args.json, env, settings_json, rows, targets)
    print(f"\nwall {env['wall_s']:.0f} s; JSON: {path}")
    return 1 if any(r.status == FAILED for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
