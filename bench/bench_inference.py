"""Inference latency of the hierarchical head (iv2018) vs the flat head (iv2018_flat), same leaves.

Both networks (MobileNetV2 backbone, random init: weights do not change the cost) are saved as
checkpoints and exported like ``python -m training.export`` does, then run in ONNX Runtime
(``--threads`` intra-op threads) through ``Engine.infer`` (network + decisions + in-graph leaf
map, at the input resolution) on a synthetic street-like image. The two engines are timed in
alternation (round r times both), so a change of machine load hits both alike; the figure is the
median over ``--repeats`` rounds after ``--warmup`` rounds.

Options: ``python bench/bench_inference.py --help``; figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the source tree

from bench.bench_decisions import synthetic_street
from hiseg_ros.engines import create_engine
from hiseg_ros.engines.checkpoint import ModelConfig, save_checkpoint
from hiseg_ros.hierarchy import load_hierarchy
from training.export import export_checkpoint

REPO = Path(__file__).resolve().parents[1]
HIERARCHIES = REPO / "config" / "hierarchies"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hierarchical", type=Path, default=HIERARCHIES / "iv2018.yaml")
    parser.add_argument("--flat", type=Path, default=HIERARCHIES / "iv2018_flat.yaml")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--shared-channels", type=int, default=256)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()

    image = synthetic_street(args.height, args.width)
    engines = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for label, path in (("hierarchical", args.hierarchical), ("flat", args.flat)):
            hierarchy = load_hierarchy(path)
            config = ModelConfig(args.backbone, args.output_stride, args.shared_channels, 1, 1)
            torch.manual_seed(0)
            net = config.build(hierarchy)
            params = sum(p.numel() for name, p in net.named_parameters() if name.startswith("heads."))
            ckpt = save_checkpoint(Path(tmp) / f"{label}.pt", net, hierarchy, config)
            print(f"exporting {label}: {hierarchy.name} {hierarchy.classifier_sizes} ...", flush=True)
            model = export_checkpoint(ckpt, Path(tmp) / f"{label}.onnx")
            engine, reason = create_engine(model, backend="onnxruntime", intra_op_threads=args.threads)
            engines[label] = (engine, hierarchy, params, reason)
        leaves = {label: sorted(c.id for c in h.leaves) for label, (_, h, _, _) in engines.items()}
        same = leaves["hierarchical"] == leaves["flat"]
        print(f"same leaves: {same} ({len(leaves['hierarchical'])} vs {len(leaves['flat'])})")

        samples: dict[str, list[float]] = {label: [] for label in engines}
        load_before = os.getloadavg()
        for round_no in range(args.warmup + args.repeats):
            for label, (engine, *_) in engines.items():
                start = time.perf_counter()
                engine.infer(image)
                elapsed = time.perf_counter() - start
                if round_no >= args.warmup:
                    samples[label].append(1000.0 * elapsed)
        load_after = os.getloadavg()
        print(
            f"input {args.height}x{args.width}, ONNX Runtime {args.threads} threads, {args.repeats} rounds "
            f"after {args.warmup} warm-up, {os.cpu_count()} CPUs, load (1 min) {load_before[0]:.2f} -> "
            f"{load_after[0]:.2f}"
        )
        print("| head | classifiers | head parameters | median ms | min ms | max ms |")
        print("|---|---|---|---|---|---|")
        for label, (engine, hierarchy, params, _) in engines.items():
            s = samples[label]
            clfs = ", ".join(f"{n}[{c}]" for n, c in hierarchy.classifier_sizes)
            print(
                f"| {label} ({hierarchy.name}) | {clfs} | {params:,} | {statistics.median(s):.1f} "
                f"| {min(s):.1f} | {max(s):.1f} |"
            )
            engine.close()
        ratio = statistics.median(samples["hierarchical"]) / statistics.median(samples["flat"])
        print(f"hierarchical / flat (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
