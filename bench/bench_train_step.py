"""Where one training iteration's time goes: batch production, forward, loss, backward, update.

``bench/bench_train.py`` measures the loop's throughput; this one takes an iteration apart, for a
training config as it is (default: the main job's ``config/training/demo.yaml``), so a change to the
data pipeline, the network or the loss can be weighed against the part it touches. In one process,
no loader workers: ``--batches`` batches of the config's schedule are produced one after the other
(the figure is per batch, what a loader worker has to keep up with), then the network (built as the
config says, pretrained weights included) runs ``--warmup`` + ``--repeats`` optimisation steps on
them, each part timed on its own; medians are printed. Also timed: the root's gate decision at
crop size by ``argmax(1)`` and by ``max(1).indices`` (the same indices; the loss uses the second,
the first was the largest single cost of the loss on the CPU).

    .venv/bin/python bench/bench_train_step.py [--config config/training/demo.yaml] [--threads 2]

Figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the source tree

from hiseg_ros.model import normalize_tensor
from training.fit.batches import training_batches
from training.fit.config import check_datasets, load_config
from training.fit.loss import HierarchicalLoss
from training.fit.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _argmax_timing(logits: dict[str, torch.Tensor], size: tuple[int, int]) -> tuple[float, float]:
    """Seconds of ``argmax(1)`` vs ``max(1).indices`` on the root's logits upsampled to the crop."""
    up = torch.nn.functional.interpolate(logits["root"].detach(), size=size, mode="bilinear", align_corners=False)
    slow, a = _timed(lambda: up.argmax(1))
    fast, b = _timed(lambda: up.max(1).indices)
    assert torch.equal(a, b)
    return slow, fast


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_train_step.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "config" / "training" / "demo.yaml")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--batches", type=int, default=8, help="batches produced (and stepped on)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config, hierarchy = load_config(args.config)
    readers = check_datasets(config, hierarchy)
    batches = training_batches(config, hierarchy, readers, 0, 1, 0, args.batches)
    produced = [_timed(lambda i=i: batches[i]) for i in range(args.batches)]
    data = statistics.median(t for t, _ in produced)
    items = [b for _, b in produced]

    torch.manual_seed(config.run.seed)
    model = config.model.build(hierarchy, pretrained=config.model.pretrained)
    model.train()
    loss = config.loss
    criterion = HierarchicalLoss(hierarchy, loss.weights, config.pseudo_labels.min_mass, loss.class_weights)
    optimizer = build_optimizer(model, config, hierarchy)
    rows: list[tuple[float, float, float, float]] = []
    argmax: list[tuple[float, float]] = []
    for i in range(args.warmup + args.repeats):
        batch = items[i % len(items)]
        images = normalize_tensor(batch.images)
        t_fwd, logits = _timed(lambda images=images: model(images))
        t_loss, out = _timed(lambda logits=logits, batch=batch: criterion(logits, batch.targets))
        optimizer.zero_grad(set_to_none=True)
        t_bwd, _ = _timed(out.total.backward)
        t_upd, _ = _timed(optimizer.step)
        if i >= args.warmup:
            rows.append((t_fwd, t_loss, t_bwd, t_upd))
            argmax.append(_argmax_timing(logits, batch.targets.size))
    fwd, loss, bwd, upd = (statistics.median(r[k] for r in rows) for k in range(4))
    slow, fast = (statistics.median(a[k] for a in argmax) for k in range(2))
    crop = "x".join(map(str, config.augment.crop))
    print(f"config {args.config}: {items[0].images.shape[0]} images of {crop} per batch, {args.threads} threads")
    print(f"batch production (one process): {data:.3f} s per batch")
    print(f"step: forward {fwd:.3f} s, loss {loss:.3f} s, backward {bwd:.3f} s, update {upd:.3f} s")
    print(f"      total {fwd + loss + bwd + upd:.3f} s")
    print(f"root decisions at crop size: argmax(1) {slow * 1000:.1f} ms, max(1).indices {fast * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
