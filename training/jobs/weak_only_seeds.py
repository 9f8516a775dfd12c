"""Summarise weak-only runs of several seeds: per arm the mean and standard deviation of each score.

    python -m training.jobs.weak_only_seeds runs/weak_only runs/weak_only_seed1 runs/weak_only_seed2 \
        [--key weak_only_classes_miou_seeds --results docs/results/weak_labels.json]

Each folder is the ``--out`` of one ``python -m training.jobs.weak_only`` run (its ``results.json``);
the arms present in every folder are summarised. Printed as a Markdown table (mean +- standard
deviation over the seeds, the per-seed values of the headline in brackets); ``--results`` also
writes it under ``--key`` in the headline JSON (docs/results/weak_labels.json).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from training.jobs.weak_only import update_results

# column -> (scored set, where in its scores); percentages of the held-out sets
COLUMNS = {
    "truck / bus / train, tag set": ("tags", ("weak_only_miou",)),
    "truck / bus / train, Cityscapes": ("cityscapes", ("weak_only_miou",)),
    "leaf mIoU, tag set": ("tags", ("leaf_miou",)),
    "root, tag set": ("tags", ("classifiers", "root")),
    "root, Cityscapes": ("cityscapes", ("classifiers", "root")),
    "human, tag set": ("tags", ("classifiers", "human")),
    "human, Cityscapes": ("cityscapes", ("classifiers", "human")),
    "vehicle, tag set": ("tags", ("classifiers", "vehicle")),
}
HEADLINE = "truck / bus / train, tag set"


def _value(scores: dict, where: tuple[str, tuple[str, ...]]) -> float | None:
    node = scores[where[0]]
    for key in where[1]:
        node = node.get(key) if isinstance(node, dict) else None
    return None if node is None else round(100.0 * float(node), 1)


def summarise(runs: list[dict]) -> dict:
    """``{"seeds": [...], arm: {column: {"values", "mean", "std"}}}`` over the arms every run has."""
    arms = [a for a in runs[0] if all(a in r for r in runs)]
    out: dict = {"seeds": [r[arms[0]]["seed"] for r in runs] if arms else []}
    for arm in arms:
        out[arm] = {}
        for column, where in COLUMNS.items():
            values = [_value(r[arm]["scores"], where) for r in runs]
            known = [v for v in values if v is not None]
            mean = round(statistics.fmean(known), 1) if known else None
            std = round(statistics.stdev(known), 1) if len(known) > 1 else None
            out[arm][column] = {"values": values, "mean": mean, "std": std}
    return out


def markdown(summary: dict) -> str:
    head = "| arm | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for arm, columns in summary.items():
        if arm == "seeds":
            continue
        cells = []
        for column, cell in columns.items():
            text = (
                "-"
                if cell["mean"] is None
                else f"{cell['mean']}" + ("" if cell["std"] is None else f" +- {cell['std']}")
            )
            if column == HEADLINE:
                text += " (" + ", ".join("-" if v is None else f"{v}" for v in cell["values"]) + ")"
            cells.append(text)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="weak_only --out folders (one per seed)")
    ap.add_argument("--results", type=Path, default=None, help="headline JSON to record the summary in")
    ap.add_argument("--key", default="weak_only_seeds", help="its key in that JSON")
    args = ap.parse_args(argv)
    runs = []
    for folder in args.runs:
        path = folder / "results.json"
        if not path.is_file():
            print(f"error: {path}: no results (run python -m training.jobs.weak_only --out {folder})", file=sys.stderr)
            return 2
        runs.append(json.loads(path.read_text()))
    summary = summarise(runs)
    print(markdown(summary))
    if args.results is not None:
        command = "python -m training.jobs.weak_only_seeds " + shlex.join(argv if argv is not None else sys.argv[1:])
        update_results(args.results, command, {args.key: summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
