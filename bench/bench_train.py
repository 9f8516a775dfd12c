"""Training throughput (images/s) and peak memory (RSS) at 512x1024 crops, 1 vs 2 DDP processes.

Runs the real training loop (``training.fit.train.train``) on the default config
(config/training/default.yaml: IV 2018 hierarchy, MobileNetV2, synthetic data, 5 images per
process per iteration) with these overrides: ``augment.crop = [512, 1024]``, random-init backbone
(weights do not change the cost), ``schedule.iterations = warmup + iterations``, a temporary
output folder. With 2 processes the ranks are started exactly as torchrun would (RANK /
WORLD_SIZE / LOCAL_RANK / MASTER_ADDR=127.0.0.1 / MASTER_PORT), gloo on the CPU, loopback only.
Both set-ups get the same total number of compute threads (``--threads``, split over the ranks).

Throughput is the global batch divided by the median per-iteration time of the iterations after
the warm-up (from the run's train_log.csv). Peak memory is ``getrusage(RUSAGE_SELF).ru_maxrss`` of
each training process, plus ``RUSAGE_CHILDREN`` (its largest data-loader worker); "sum" adds the
peaks of all processes (an upper bound: the peaks need not coincide).

Options: ``python bench/bench_train.py --help``; figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "training" / "default.yaml"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args: argparse.Namespace) -> int:
    """One training process (rank from the environment); writes its peak RSS to ``out/rss_rank{r}.json``."""
    sys.path.insert(0, str(REPO))
    from training.fit.config import load_config
    from training.fit.train import train

    config, hierarchy = load_config(args.config, check_data=False)
    config = config.with_overrides(
        augment={"crop": (args.height, args.width)},
        model={"pretrained": None},
        schedule={"iterations": args.warmup + args.iterations, "warmup_iterations": 0},
        run={"out_dir": str(args.out), "num_workers": args.num_workers, "log_every": 1},
        checkpoint={"every": 10**9, "keep": 1},
    )
    result = train(config, hierarchy, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    stats = {
        "rank": rank,
        "iterations": result.iteration,
        "maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "maxrss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "torch_threads": __import__("torch").get_num_threads(),
    }
    (Path(args.out) / f"rss_rank{rank}.json").write_text(json.dumps(stats), encoding="utf-8")
    return 0


def run_world(world: int, args: argparse.Namespace, out: Path) -> dict:
    threads = max(1, args.threads // world)
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "lo",
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": str(REPO),
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out)]
        cmd += ["--config", str(args.config), "--warmup", str(args.warmup), "--iterations", str(args.iterations)]
        cmd += ["--height", str(args.height), "--width", str(args.width), "--num-workers", str(args.num_workers)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        logs = [p.communicate(timeout=args.timeout)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    for rank, p in enumerate(procs):
        if p.returncode != 0:
            raise SystemExit(f"world {world} rank {rank} failed (exit {p.returncode}):\n{logs[rank][-3000:]}")
    with open(out / "train_log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    timed = [float(r["seconds"]) for r in rows[args.warmup :]]
    sys.path.insert(0, str(REPO))
    from training.fit.config import load_config

    config, _ = load_config(args.config, check_data=False)
    global_batch = world * sum(d.per_batch for d in config.datasets)
    stats = [json.loads((out / f"rss_rank{r}.json").read_text()) for r in range(world)]
    med = statistics.median(timed)
    return {
        "world": world,
        "threads": threads,
        "global_batch": global_batch,
        "median_s": med,
        "min_s": min(timed),
        "max_s": max(timed),
        "images_per_s": global_batch / med,
        "rss_self": [s["maxrss_self_mib"] for s in stats],
        "rss_children": [s["maxrss_children_mib"] for s in stats],
        "wall_s": wall,
        "load_before": load_before,
        "load_after": load_after,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=1, help="iterations not timed")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2], help="numbers of DDP processes")
    parser.add_argument("--threads", type=int, default=2, help="total torch threads, split over the processes")
    parser.add_argument("--num-workers", type=int, default=2, help="data-loader workers per process")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(
        f"training {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}, "
        f"crop {args.height}x{args.width}, mobilenet_v2 (random init), {args.warmup} warm-up + "
        f"{args.iterations} timed iterations, {args.threads} threads in total, "
        f"{args.num_workers} loader workers per process, {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for world in args.worlds:
        with tempfile.TemporaryDirectory(prefix=f"bench_train_w{world}_") as tmp:
            r = run_world(world, args, Path(tmp))
        results.append(r)
        print(
            f"  world {world}: {r['images_per_s']:.2f} img/s (median {r['median_s']:.2f} s/it, "
            f"min {r['min_s']:.2f}, max {r['max_s']:.2f}), wall {r['wall_s']:.0f} s, "
            f"load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}",
            flush=True,
        )
    print()
    print(
        "| processes | threads/proc | global batch | s/iteration (median) | images/s | peak RSS per process (MiB) "
        "| + loader worker peak (MiB) | sum of peaks (MiB) | load 1-min before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        per = " / ".join(f"{v:.0f}" for v in r["rss_self"])
        child = " / ".join(f"{v:.0f}" for v in r["rss_children"])
        total = sum(r["rss_self"]) + sum(r["rss_children"])
        print(
            f"| {r['world']} | {r['threads']} | {r['global_batch']} | {r['median_s']:.2f} | {r['images_per_s']:.2f} "
            f"| {per} | {child} | {total:.0f} | {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
