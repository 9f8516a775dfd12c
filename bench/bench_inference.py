"""Inference latency of network variants through the exported model, timed in alternation.

``--compare heads`` (default): the hierarchical head (iv2018) vs the flat head (iv2018_flat), same
leaves, same backbone. ``--compare resolution``: iv2018 at output stride 16 (today's network),
output stride 8, and each with the light decoder (``decoder: deconv_skip``, logits at half the
output stride): what a finer decision grid for small objects costs.

Every variant (random init: weights do not change the cost) is saved as a checkpoint and exported
like ``python -m training.export`` does, then run in ONNX Runtime (``--threads`` intra-op threads)
through ``Engine.infer`` (network + decisions + in-graph leaf map, at the input resolution) on a
synthetic street-like image. The engines are timed in alternation (round r times each once), so a
change of machine load hits all alike; the figure is the median over ``--repeats`` rounds after
``--warmup`` rounds, and each variant's ratio to the first.

Options: ``python bench/bench_inference.py --help``; figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def variants(args: argparse.Namespace) -> list[tuple[str, Path, ModelConfig]]:
    """``(label, hierarchy file, network config)`` of each variant, the reference first."""
    base = ModelConfig(args.backbone, args.output_stride, args.shared_channels, 1, 1)
    if args.compare == "heads":
        return [("hierarchical", args.hierarchical, base), ("flat", args.flat, base)]
    out = []
    for decoder in ("none", "deconv_skip"):
        for stride in (16, 8):
            config = dataclasses.replace(base, output_stride=stride, decoder=decoder)
            out.append((f"os{stride}" + ("" if decoder == "none" else f"+{decoder}"), args.hierarchical, config))
    return out


def multiply_adds(net: torch.nn.Module, height: int, width: int) -> int:
    """Multiply-adds of the network's convolutions for one ``height x width`` image: a cost figure
    the machine's load does not change (the decisions and the leaf map are not counted)."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total  # weight.numel() multiply-adds per output pixel (per input pixel when transposed)
        grid = inputs[0] if isinstance(module, torch.nn.ConvTranspose2d) else output
        total += grid.shape[-2:].numel() * module.weight.numel()

    hooks = [
        m.register_forward_hook(count)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, 3, height, width))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("heads", "resolution"), default="heads")
    parser.add_argument("--hierarchical", type=Path, default=HIERARCHIES / "iv2018.yaml")
    parser.add_argument("--flat", type=Path, default=HIERARCHIES / "iv2018_flat.yaml")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--output-stride", type=int, default=16, help="(--compare heads)")
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
        for label, path, config in variants(args):
            hierarchy = load_hierarchy(path)
            torch.manual_seed(0)
            net = config.build(hierarchy)
            params = sum(p.numel() for name, p in net.named_parameters() if name.startswith("heads."))
            total = sum(p.numel() for p in net.parameters())
            ckpt = save_checkpoint(Path(tmp) / f"{label}.pt", net, hierarchy, config)
            print(
                f"exporting {label}: {hierarchy.name} {hierarchy.classifier_sizes} {config.to_dict()} ...", flush=True
            )
            model = export_checkpoint(ckpt, Path(tmp) / f"{label}.onnx")
            engine, _ = create_engine(model, backend="onnxruntime", intra_op_threads=args.threads)
            macs = multiply_adds(net, args.height, args.width)
            engines[label] = (engine, hierarchy, params, total, net.logit_stride, macs)
        if args.compare == "heads":
            leaves = {label: sorted(c.id for c in h.leaves) for label, (_, h, *_) in engines.items()}
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
            f"input {args.height}x{args.width}, {args.backbone}, ONNX Runtime {args.threads} threads, {args.repeats} "
            f"rounds after {args.warmup} warm-up, {os.cpu_count()} CPUs, load (1 min) {load_before[0]:.2f} -> "
            f"{load_after[0]:.2f}"
        )
        print(
            "| variant | classifiers | logits | head parameters | network parameters | conv GMAC | median ms | min ms "
            "| max ms | / first (ms) | / first (GMAC) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        first = next(iter(engines))
        ref_ms, ref_macs = statistics.median(samples[first]), engines[first][5]
        for label, (engine, hierarchy, params, total, stride, macs) in engines.items():
            s = samples[label]
            clfs = ", ".join(f"{n}[{c}]" for n, c in hierarchy.classifier_sizes)
            cells = f"{-(-args.height // stride)}x{-(-args.width // stride)} (stride {stride})"
            median = statistics.median(s)
            print(
                f"| {label} ({hierarchy.name}) | {clfs} | {cells} | {params:,} | {total:,} | {macs / 1e9:.2f} | "
                f"{median:.1f} | {min(s):.1f} | {max(s):.1f} | {median / ref_ms:.3f} | {macs / ref_macs:.3f} |"
            )
            engine.close()
        if args.compare == "heads":
            ratio = statistics.median(samples["hierarchical"]) / statistics.median(samples["flat"])
            print(f"hierarchical / flat (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
