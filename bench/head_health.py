"""Does a heavy sub-classifier loss wreck the shared network? A sweep of the traffic-sign head's weight.

For each weight of ``traffic_sign_front`` (``--weights``, default 0.1 0.3 1.0) and each guard
(``--guards``: ``trunk`` = the default trunk weights of :mod:`training.fit.trunk_gradient`, at most
``SUB_TRUNK_WEIGHT`` of a sub-classifier's loss reaches the trunk; ``none`` = the trunk sees the full weight, as
before the safeguard), train the default config (config/training/default.yaml: its datasets, crop
sampling and recipe; crop, iterations and weights from the command line; ``trunk=W``: the sign
head reaches the trunk with weight ``W``) and measure on held-out
scenes: the root's mIoU on Cityscapes ``val`` + Vistas ``validation``, Cityscapes mIoU, the sign
classes given the location on the GTSDB test images, the mean ``traffic_sign_front`` loss over the
last tenth of training, and the largest BatchNorm running variance of the trunk (backbone + shared
reduction), the symptom of the collapse. Rows go to ``--out/head_health.json`` (merged with the
rows of earlier invocations into the same folder) and a Markdown table on stdout; ``--head-lr``
multiplies every head's learning rate::

    .venv/bin/python -m bench.head_health --iterations 300 --crop 192 384 --limit 20 --out runs/head_health
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hiseg_ros.engines.checkpoint import load_checkpoint
from training import REPO
from training.evaluation.metrics import pct
from training.fit.log import read_csv
from training.fit.trunk_gradient import SUB_TRUNK_WEIGHT
from training.jobs.experiments import evaluate_variant

BASE = REPO / "config" / "training" / "default.yaml"
SIGN_HEAD = "traffic_sign_front"


def run_config(weight: float, guard: str, args: argparse.Namespace, out: Path) -> dict:
    """A variant of default.yaml (``base:``): only what this sweep changes."""
    raw: dict = {
        "base": str(BASE),
        "data_root": str(args.data.resolve()),
        "augment": {"crop": list(args.crop)},
        "loss": {"weights": {"root": 1.0, "drivable": 0.1, "rider": 0.1, "traffic_sign": 0.1, SIGN_HEAD: weight}},
        "schedule": {"iterations": args.iterations},
        "run": {"out_dir": str(out), "num_workers": 1, "log_every": 10, "device": "cpu", "seed": args.seed},
        "checkpoint": {"every": args.iterations, "keep": 1},
    }
    if guard == "none":  # the trunk sees every classifier's full loss weight
        raw["loss"]["trunk_weights"] = dict(raw["loss"]["weights"])
    elif guard.startswith("trunk="):  # the sign head reaches the trunk with this weight
        raw["loss"]["trunk_weights"] = {SIGN_HEAD: float(guard.split("=", 1)[1])}
    if args.head_lr != 1.0:
        raw["optimizer"] = {"head_lr": dict.fromkeys(raw["loss"]["weights"], args.head_lr)}
    return raw


def trunk_bn_max_variance(checkpoint: Path) -> float:
    net = load_checkpoint(checkpoint).net
    variances = [
        m.running_var.max().item()
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("heads.")
    ]
    return float(max(variances))


def late_loss(log: Path, fraction: float = 0.1) -> float:
    rows = read_csv(log)
    values = [float(r[f"loss/{SIGN_HEAD}"]) for r in rows]
    tail = values[-max(1, int(len(values) * fraction)) :]
    return float(np.mean(tail))


def measure(weight: float, guard: str, args: argparse.Namespace) -> dict:
    # guard "both": the trunk and the head see the same weight
    out = args.out / (f"w{weight:g}_{guard}" + (f"_headlr{args.head_lr:g}" if args.head_lr != 1.0 else ""))
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.sweep.yaml"
    config.write_text(yaml.safe_dump(run_config(weight, guard, args, out), sort_keys=False))
    checkpoint = out / "last.pt"
    seconds = None
    if not checkpoint.is_file():
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "training.fit.train", "--config", str(config), "--no-progress"]
        subprocess.run(cmd, cwd=REPO, check=True)
        seconds = time.perf_counter() - start
    result = evaluate_variant(checkpoint, args.data, args.limit)
    return {
        "weight": weight,
        "guard": guard,
        "head_lr": args.head_lr,
        "root_miou": result["classifiers"]["root"],
        "cityscapes_miou": result["datasets"]["cityscapes"],
        "cityscapes_traffic_sign_iou": result["cityscapes_classes"]["traffic sign"],
        "sign_miou_given_location": result["signs_given_location"]["miou"],
        "sign_pixel_acc_given_location": result["signs_given_location"]["pixel_accuracy"],
        "sign_loss_late": late_loss(out / "train_log.csv"),
        "trunk_bn_max_running_var": trunk_bn_max_variance(checkpoint),
        "train_seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| sign weight | guard | head lr | root mIoU | Cityscapes mIoU | Cityscapes traffic-sign IoU "
        "| signs given location: mIoU / px acc "
        "| sign loss (last 10 %) | trunk BN max running var |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['weight']:g} | {r['guard']} | {r.get('head_lr', 1.0):g}x | "
            f"{pct(r['root_miou'], 1)} | {pct(r['cityscapes_miou'], 1)} | "
            f"{pct(r.get('cityscapes_traffic_sign_iou'), 1)} | "
            f"{pct(r['sign_miou_given_location'], 1)} / {pct(r['sign_pixel_acc_given_location'], 1)} | "
            f"{r['sign_loss_late']:.2f} | {r['trunk_bn_max_running_var']:.1f} |"
        )
    return "\n".join(lines)


def _guard(text: str) -> str:
    if text in ("trunk", "none"):
        return text
    if text.startswith("trunk="):
        try:
            if float(text.split("=", 1)[1]) >= 0:
                return text
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"expected trunk, none or trunk=W (W >= 0), got {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.head_health", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "head_health")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument(
        "--guards",
        nargs="+",
        type=_guard,
        default=["trunk", "none"],
        help="trunk (the default trunk weights), none (the trunk sees the full weight) or trunk=W",
    )
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--crop", type=int, nargs=2, default=(192, 384), metavar=("H", "W"))
    ap.add_argument("--limit", type=int, default=20, help="held-out images per evaluation source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-lr", type=float, default=1.0, help="learning-rate multiplier of every head")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "head_health.json"
    # rows of earlier invocations into the same folder are kept (one row per weight, guard, head_lr)
    rows = json.loads(results.read_text())["rows"] if results.is_file() else []
    for weight in args.weights:
        # at or below the paper's weight both guards train the same network: one run, guard "both"
        guards = ["both"] if weight <= SUB_TRUNK_WEIGHT else args.guards
        for guard in guards:
            row = measure(weight, guard, args)
            print(table([row]).splitlines()[-1], flush=True)
            key = (row["weight"], row["guard"], row["head_lr"])
            rows = [r for r in rows if (r["weight"], r["guard"], r.get("head_lr", 1.0)) != key] + [row]
            results.write_text(json.dumps({"rows": rows, "command": sys.argv[1:]}, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
