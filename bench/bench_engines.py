"""Latency of the inference engines on one image: ONNX Runtime (and PyTorch for comparison).

A randomly initialised network of the given hierarchy (default: the IV 2018 hierarchy with a
MobileNetV2 backbone) is saved as a checkpoint and exported like ``python -m training.export``
does, then each backend runs ``Engine.infer`` (network + decisions + in-graph leaf map, all at the
input resolution) on a synthetic street-like image. Weights do not change the cost, so random init
measures what a trained model costs. TensorRT is measured too when it can run here.

Options (``--model`` benchmarks an existing export instead): ``python bench/bench_engines.py --help``;
figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the source tree

from bench.bench_decisions import synthetic_street
from hiseg_ros.engines import Engine, create_engine
from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.hierarchy import load_hierarchy
from training.export import export_checkpoint

REPO = Path(__file__).resolve().parents[1]


def median_ms(engine: Engine, image: np.ndarray, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, min) latency of ``engine.infer(image)`` in ms after ``warmup`` runs."""
    for _ in range(warmup):
        engine.infer(image)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.infer(image)
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples), 1000.0 * min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hierarchy", type=Path, default=REPO / "config" / "hierarchies" / "iv2018.yaml")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--shared-channels", type=int, default=256)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op / torch threads")
    parser.add_argument("--model", type=Path, help="benchmark this ONNX file instead of exporting one")
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    image = synthetic_street(args.height, args.width)
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        checkpoint = None
        model = args.model
        if model is None:
            hierarchy = load_hierarchy(args.hierarchy)
            config = ModelConfig(args.backbone, args.output_stride, args.shared_channels, 1, 1)
            torch.manual_seed(0)
            checkpoint = save_checkpoint(Path(tmp) / "bench.pt", config.build(hierarchy), hierarchy, config)
            print(f"exporting {hierarchy.name} / {args.backbone} (os {args.output_stride}) ...", flush=True)
            model = export_checkpoint(checkpoint, Path(tmp) / "bench.onnx")
        runs: list[tuple[str, dict]] = [("onnxruntime", {"intra_op_threads": args.threads})]
        if checkpoint is not None and not args.skip_torch:
            runs.append(("torch", {"intra_op_threads": args.threads}))
        runs.append(("tensorrt", {"precision": "fp16", "cache_dir": Path(tmp) / "engines"}))

        print(f"input {args.height}x{args.width}, {args.repeats} runs, torch threads {torch.get_num_threads()}")
        for backend, options in runs:
            path = checkpoint if backend == "torch" else model
            try:
                engine, reason = create_engine(path, backend=backend, **options)
            except Exception as exc:  # TensorRT missing here: say so and go on
                print(f"  {backend:12s} skipped: {exc}")
                continue
            med, best = median_ms(engine, image, args.repeats)
            print(
                f"  {engine.name:40s} median {med:8.1f} ms   min {best:8.1f} ms   ({reason}; "
                f"load (1 min) {os.getloadavg()[0]:.2f})"
            )
            engine.close()


if __name__ == "__main__":
    main()
