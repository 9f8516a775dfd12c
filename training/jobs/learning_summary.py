"""``docs/results/learning.json``: the headline learning figures of the latest runs, for programs.

Built from the files the runs wrote, never typed in: the experiments' ``results.json``
(:mod:`training.jobs.experiments`; ``hierarchical`` = its ``pixel_boxes_tags`` variant, ``flat`` =
``flat``), the main job's replay ``metrics.json`` (``OUT/live`` or ``OUT/offline``) with the wall
time it printed, the replays of main-job variants (``--main-job-variant NAME=metrics.json``, repeatable:
the recipe's ablation, ``main_job_variants``; a name given again replaces its entry), and the
head-health sweep's rows (``bench/head_health.py``). Each source given
replaces its part of an existing file; the others are kept. ``--experiments`` may be repeated
(variants trained side by side, each into its own folder): the files are merged, a later file's
variant replacing an earlier one's. Percentages are numbers 0-100, null
where a score is undefined (no detection: no class accuracy) or not measured::

    python -m training.jobs.learning_summary --out docs/results/learning.json \\
        --experiments runs/experiments/results.json \\
        --main-job runs/demo/live/metrics.json --main-job-wall-s 1027 \\
        --head-health runs/head_health/head_health.json --command "..." --note "..."
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from hiseg_ros.atomic import atomic_write_bytes

HIERARCHICAL, FLAT = "pixel_boxes_tags", "flat"
SIGN_SUBSET = "at_least_24px"  # the main job's sign target counts signs with a longer side of >= 24 px


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


def network_figures(result: dict[str, Any]) -> dict[str, float | None]:
    """One experiment variant's headline scores (see :func:`training.jobs.experiments.evaluate_variant`)."""
    return {
        "sign_miou_end_to_end": _pct(result["signs"]["miou"]),
        "sign_miou_given_location": _pct(result["signs_given_location"]["miou"]),
        "sign_pixel_acc_given_location": _pct(result["signs_given_location"]["pixel_accuracy"]),
        "root_traffic_sign_iou": _pct(result.get("cityscapes_classes", {}).get("traffic sign")),
        "cityscapes_miou": _pct(result["datasets"].get("cityscapes")),
        "iterations": result.get("iterations"),
        "crop": result.get("crop"),
        "train_seconds": round(result["train_seconds"]) if result.get("train_seconds") else None,
    }


def main_job_figures(metrics: dict[str, Any], wall_s: float | None) -> dict[str, Any]:
    """The main job's replay: Cityscapes mIoU and the drive's sign detection (signs of >= 24 px)."""
    signs = metrics.get("signs") or {}
    subset = (signs.get(SIGN_SUBSET) or {}).get("overall") or {}
    every = (signs.get("all") or {}).get("overall") or {}
    cityscapes = metrics["evaluation"]["datasets"].get("cityscapes", {})
    return {
        "wall_s": None if wall_s is None else round(wall_s),
        "cityscapes_miou": _pct(cityscapes.get("miou")),
        "sign_recall": _pct(subset.get("recall")),
        "sign_class_accuracy": _pct(subset.get("class_accuracy")),
        "sign_truth": subset.get("truth"),
        "sign_recall_all_sizes": _pct(every.get("recall")),
        "frames": (metrics.get("frames") or {}).get("with_outputs"),
        "classifiers_miou": {
            name: _pct(value.get("miou") if isinstance(value, dict) else value)
            for name, value in (metrics["evaluation"].get("classifiers") or {}).items()
        },
    }


def summarise(
    previous: dict[str, Any],
    experiments: dict[str, Any] | None = None,
    main_job: dict[str, Any] | None = None,
    main_job_wall_s: float | None = None,
    head_health: dict[str, Any] | None = None,
    commands: list[str] | None = None,
    note: str | None = None,
    today: str | None = None,
    main_job_variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``previous`` with the parts of the given sources replaced."""
    out = dict(previous)
    if experiments is not None:
        for key, variant in (("hierarchical", HIERARCHICAL), ("flat", FLAT)):
            if variant in experiments:
                out[key] = network_figures(experiments[variant])
    if main_job is not None:
        out["main_job"] = main_job_figures(main_job, main_job_wall_s)
    if main_job_variants:
        out["main_job_variants"] = {
            **previous.get("main_job_variants", {}),
            **{name: main_job_figures(metrics, None) for name, metrics in main_job_variants.items()},
        }
    if head_health is not None:
        out["head_health"] = head_health["rows"]
    if commands:  # added to the earlier ones: the figures those made stay in the file
        out["commands"] = list(dict.fromkeys([*previous.get("commands", []), *commands]))
    if note is not None:
        out["notes"] = note
    out["measured"] = today or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return out


def _read(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.jobs.learning_summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON file (updated in place, atomically)")
    ap.add_argument(
        "--experiments", type=Path, action="append", help="results.json of training.jobs.experiments (repeatable)"
    )
    ap.add_argument("--main-job", type=Path, help="metrics.json of the main job's replay")
    ap.add_argument("--main-job-wall-s", type=float, help="the main job's total wall time as it printed it")
    ap.add_argument(
        "--main-job-variant",
        action="append",
        default=[],
        metavar="NAME=METRICS",
        help="metrics.json of a main-job variant's replay (repeatable)",
    )
    ap.add_argument("--head-health", type=Path, help="head_health.json of bench/head_health.py")
    ap.add_argument("--command", action="append", dest="commands", help="a command behind the figures (repeat)")
    ap.add_argument("--note", help="how and where the runs were made (machine, load)")
    args = ap.parse_args(argv)
    previous = _read(args.out) if args.out.is_file() else {}
    variants = {}
    for item in args.main_job_variant:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"--main-job-variant: expected NAME=PATH, got {item!r}")
        variants[name] = _read(Path(path))
    experiments = None
    for path in args.experiments or []:
        experiments = {**(experiments or {}), **_read(path)}
    summary = summarise(
        previous,
        experiments,
        _read(args.main_job),
        args.main_job_wall_s,
        _read(args.head_health),
        args.commands,
        args.note,
        main_job_variants=variants,
    )
    atomic_write_bytes(args.out, (json.dumps(summary, indent=2) + "\n").encode())
    print(json.dumps({k: v for k, v in summary.items() if k != "head_health"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
