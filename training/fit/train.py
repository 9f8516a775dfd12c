"""Train the hierarchical segmentation network from a training config: the entry point.

:func:`train` is the Python API (the main job and the benchmarks call it), :func:`main` the
command line (its options are in the argparse parser). One process, or ``torchrun`` with any
number of processes and the same code (:mod:`training.fit.distributed`). The loop itself is
:func:`training.fit.loop.fit`; a run folder holds ``config.yaml``, ``hierarchy.json``,
``train_log.csv``, ``plots/`` and the checkpoints (:mod:`training.fit.checkpoints`), from which
``--resume`` continues exactly the run it interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from hiseg_ros.hierarchy import Hierarchy
from training.fit.config import ConfigError, TrainConfig, load_config
from training.fit.distributed import distributed_session
from training.fit.loop import TrainResult, fit

__all__ = ["TrainResult", "main", "train"]


def train(
    config: TrainConfig,
    hierarchy: Hierarchy,
    resume: str | bool | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or continue) training in this process, as one rank of the torchrun environment if there is one.

    ``resume``: ``True`` continues from ``run.out_dir/last.pt``, a path from that checkpoint.
    ``stop_after``: stop (with a checkpoint) after this many iterations of the schedule.
    """
    with distributed_session(config.run.device) as info:
        return fit(config, hierarchy, info, resume, stop_after, progress)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.fit.train",
        description="Train the hierarchical segmentation network (one process, or under torchrun for DDP).",
    )
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from OUT/last.pt, or from the given checkpoint",
    )
    parser.add_argument("--out", help="output folder (overrides run.out_dir)")
    parser.add_argument("--iterations", type=int, help="schedule length (overrides schedule.iterations)")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many iterations")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision on CUDA (overrides run.amp, which is on by default; no effect on the CPU)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config, hierarchy = load_config(args.config, check_data=False)
        overrides: dict[str, dict] = {}
        if args.out:
            overrides.setdefault("run", {})["out_dir"] = args.out
        if args.amp is not None:
            overrides.setdefault("run", {})["amp"] = args.amp
        if args.iterations is not None:
            if args.iterations <= 0:
                raise ConfigError(f"--iterations: expected > 0, got {args.iterations}")
            overrides["schedule"] = {"iterations": args.iterations}
        if overrides:
            config = config.with_overrides(**overrides)
        result = train(config, hierarchy, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: iteration {result.iteration}, checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
