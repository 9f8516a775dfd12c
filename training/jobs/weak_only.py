"""The weak-only experiment: can image-level tags teach classes that no per-pixel label names?

Hierarchy ``iv2019_weak_only.yaml``: Cityscapes and Vistas label truck / bus / train only as
"vehicle", the tag set keeps them as leaves. Three arms, trained with the project's own trainer
(``python -m training.fit.train``) on the same per-pixel data and schedule:

- ``pseudo``: ``config/training/weak_only.yaml`` + ``pseudo_labels.precomputed`` (labels of
  ``python -m training.labels.pseudo_labels generate --split train --hierarchy
  config/hierarchies/iv2019_weak_only.yaml``; folder ``--pseudo-labels``);
- ``uniform``: ``weak_only.yaml`` as shipped (IV 2019 uniform tiling of the tags);
- ``pixel_only``: ``weak_only_pixel.yaml`` (no tag set: the three leaves cannot be learned).

The tag set (``--tags``: a folder written by ``python -m training.data.synthetic --only openscapes
--absent-vehicles P``) is trained on through a view of its ``train`` split; its ``validation``
images and their true masks are held out for scoring (:mod:`training.jobs.weak_only_eval`), as
are Cityscapes ``val`` and Vistas ``validation``. Each arm's config is a thin file with ``base:``
the shipped one. ``--results`` writes the headline JSON (``docs/results/weak_labels.json``):
``weak_only_classes_miou`` = mean IoU of truck / bus / train on the tag set's held-out truth;
numbers not measured by this run stay as they were (null when never measured).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.hierarchy import load_hierarchy
from training import REPO
from training.config_schema import load_with_bases
from training.fit.config import MERGE_DEPTH
from training.jobs.experiments import TAGS, missing_pseudo_labels, tag_split_view
from training.jobs.weak_only_eval import same_tree, score_network
from training.labels.pseudo_labels.batch import split_ids
from training.labels.targets import TAG_CLASSIFIERS

CONFIGS = REPO / "config" / "training"
FULL_HIERARCHY = REPO / "config" / "hierarchies" / "iv2019.yaml"
RESULTS = REPO / "docs" / "results" / "weak_labels.json"


@dataclass(frozen=True)
class Arm:
    """One arm: its shipped config, and whether it trains on precomputed pseudo labels of the tag set."""

    name: str
    config: str
    precomputed: bool = False

    @property
    def uses_tags(self) -> bool:
        return self.config != "weak_only_pixel.yaml"


ARMS = {
    a.name: a
    for a in (
        Arm("pseudo", "weak_only.yaml", precomputed=True),
        Arm("uniform", "weak_only.yaml"),
        Arm("pixel_only", "weak_only_pixel.yaml"),
    )
}


def arm_config(
    arm: Arm,
    data_root: Path,
    tags_view: Path | None,
    iterations: int,
    crop: tuple[int, int],
    out: Path,
    pseudo_labels: Path | None = None,
    seed: int = 0,
    tag_classifiers: str = "all",
) -> dict:
    """A thin config over the arm's shipped file: data paths, schedule, output, seed (run-to-run
    variation: the data order, crops and initialisation of the new layers); pseudo labels for ``pseudo``;
    ``tag_classifiers`` (``pseudo_labels.tag_classifiers``; "none" = ``[]``) for the arms that train on
    the tag set.

    ``datasets`` is a list, which ``base:`` replaces whole, so it is the shipped (merged) list with
    the tag set's root pointed at ``tags_view`` (absolute, so not joined with ``data_root``).
    """
    base = CONFIGS / arm.config
    merged, _ = load_with_bases(base, MERGE_DEPTH)
    datasets = []
    for entry in merged["datasets"]:
        if entry["name"] == TAGS:
            if tags_view is None:
                raise ValueError(f"arm {arm.name}: {arm.config} trains on the tag set; give its train-split view")
            entry = dict(entry, root=str(tags_view))
        datasets.append(entry)
    raw: dict = {
        "base": str(base),
        "data_root": str(data_root),
        "datasets": datasets,
        "augment": {"crop": list(crop)},
        "schedule": {"iterations": iterations},
        "run": {"out_dir": str(out), "num_workers": 0, "log_every": 10, "seed": seed},
        "checkpoint": {"every": iterations, "keep": 1},
    }
    choice = [] if tag_classifiers == "none" else tag_classifiers  # none: an empty list of classifiers
    weak: dict = {"tag_classifiers": choice} if arm.uses_tags and tag_classifiers != "all" else {}
    if arm.precomputed:
        if pseudo_labels is None:
            raise ValueError(f"arm {arm.name}: needs the precomputed pseudo-label folder (--pseudo-labels)")
        weak["precomputed"] = {TAGS: {"dir": str(Path(pseudo_labels).resolve()), "output": "hard"}}
    if weak:
        raw["pseudo_labels"] = weak
    return raw


def train_arm(arm: Arm, raw: dict, out: Path) -> Path:
    """Train in a subprocess (the user's own command); an existing ``last.pt`` is reused."""
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "arm_config.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    checkpoint = out / "last.pt"
    if not checkpoint.is_file():
        cmd = [sys.executable, "-m", "training.fit.train", "--config", str(config_path), "--out", str(out)]
        subprocess.run([*cmd, "--no-progress"], cwd=REPO, check=True)
    return checkpoint


def check_pseudo_labels(tags_dir: Path, pseudo_labels: Path) -> str | None:
    """Why the pseudo arm cannot train (before any training starts), or None."""
    if not pseudo_labels.is_dir():
        return f"no pseudo-label folder {pseudo_labels} (see --help)"
    missing = missing_pseudo_labels(pseudo_labels, sorted(split_ids(tags_dir, "train") or ()))
    if missing:
        return f"{len(missing)} train images of {tags_dir} have no label in {pseudo_labels} (e.g. {missing[:3]})"
    return None


def evaluate_arm(checkpoint: Path, data_root: Path, tags_dir: Path, limit: int | None) -> dict:
    from hiseg_ros.engines.torch_engine import TorchEngine  # torch only when a network is scored

    engine = TorchEngine(checkpoint)
    full = load_hierarchy(FULL_HIERARCHY)
    same_tree(engine.hierarchy, full)
    return score_network(lambda image: engine.infer(image).per_classifier, full, data_root, tags_dir, limit)


def results_document(previous: dict) -> dict:
    """The ``weak_labels.json`` keys, from the previous file where it has them, else null / empty
    (other keys of the previous file, e.g. notes, are kept as they are)."""
    return {
        **previous,
        "pseudo_label_miou": previous.get("pseudo_label_miou"),
        "ablation": dict(previous.get("ablation") or {}),
        "weak_only_classes_miou": dict.fromkeys(ARMS) | (previous.get("weak_only_classes_miou") or {}),
        "weak_only_classes_miou_cityscapes": dict.fromkeys(ARMS)
        | (previous.get("weak_only_classes_miou_cityscapes") or {}),
        "commands": list(previous.get("commands") or []),
        "measured": previous.get("measured"),
    }


def update_results(path: Path, command: str, update: dict) -> dict:
    """Merge one measurement into the JSON at ``path`` (nested dicts key by key), record its command
    and today's date, and write it atomically; what this measurement did not measure stays as it was."""
    doc = results_document(json.loads(path.read_text()) if path.is_file() else {})
    for key, value in update.items():
        doc[key] = doc[key] | value if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
    doc["commands"] = list(dict.fromkeys([*doc["commands"], command]))
    doc["measured"] = datetime.date.today().isoformat()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return doc


def arm_headline(results: dict) -> dict:
    """This run's arms as ``weak_labels.json`` entries: truck / bus / train mIoU (%) on the tag set's
    held-out truth (the headline) and on Cityscapes ``val``."""
    return {
        "weak_only_classes_miou": {n: _pct(r["scores"]["tags"]["weak_only_miou"]) for n, r in results.items()},
        "weak_only_classes_miou_cityscapes": {
            n: _pct(r["scores"]["cityscapes"]["weak_only_miou"]) for n, r in results.items()
        },
    }


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.jobs.weak_only", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic", help="Cityscapes / Vistas root")
    ap.add_argument("--tags", type=Path, default=REPO / "data" / "synthetic_weak" / TAGS, help="the tag set folder")
    ap.add_argument("--pseudo-labels", type=Path, default=REPO / "runs" / "pseudo_labels" / "weak_only_train_hard")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "weak_only")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--crop", type=int, nargs=2, default=(192, 384), metavar=("H", "W"))
    ap.add_argument("--limit", type=int, default=None, help="score at most N images per set")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every arm (run-to-run variation)")
    ap.add_argument("--results", type=Path, default=None, help=f"also write the headline JSON (e.g. {RESULTS})")
    ap.add_argument(
        "--tag-classifiers",
        choices=(*TAG_CLASSIFIERS, "none"),
        default="all",
        help="classifiers the tag set's targets train (pseudo_labels.tag_classifiers): all; untaught = only "
        "those with a class no per-pixel set labels; none = the tag images only pass through the network "
        "(a control)",
    )
    args = ap.parse_args(argv)
    data, tags, out, pseudo = (p.resolve() for p in (args.data, args.tags, args.out, args.pseudo_labels))
    names = [n.strip() for n in args.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        print(f"error: unknown arms {unknown} (known: {list(ARMS)})", file=sys.stderr)
        return 2
    try:
        split_ids(tags, "train")
        problem = check_pseudo_labels(tags, pseudo) if any(ARMS[n].precomputed for n in names) else None
    except ValueError as exc:
        problem = str(exc)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if tags.name != TAGS:  # the split view is built from TAGS_ROOT/openscapes, as the generator writes it
        print(f"error: --tags must be a folder named {TAGS!r} (the generator's), got {tags}", file=sys.stderr)
        return 2
    view = tag_split_view(tags.parent, "train", out / "_data") if any(ARMS[n].uses_tags for n in names) else None
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in names:
        arm = ARMS[name]
        start = time.perf_counter()
        tags_view = view if arm.uses_tags else None
        raw = arm_config(
            arm, data, tags_view, args.iterations, tuple(args.crop), out / name, pseudo, args.seed, args.tag_classifiers
        )
        checkpoint = train_arm(arm, raw, out / name)
        seconds = results.get(name, {}).get("train_seconds") or time.perf_counter() - start
        print(f"[{name}] trained ({seconds:.0f} s), scoring", flush=True)
        scores = evaluate_arm(checkpoint, data, tags, args.limit)
        results[name] = {
            "scores": scores,
            "train_seconds": seconds,
            "iterations": args.iterations,
            "crop": args.crop,
            "seed": args.seed,
            **({"tag_classifiers": args.tag_classifiers} if arm.uses_tags else {}),
        }
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(results_path, json.dumps(results, indent=2).encode())
        tags_score = scores["tags"]
        print(f"[{name}] tag set: truck/bus/train mIoU {_pct(tags_score['weak_only_miou'])} %, "
              f"leaf mIoU {_pct(tags_score['leaf_miou'])} %", flush=True)  # fmt: skip
    if args.results is not None:
        command = "python -m training.jobs.weak_only " + shlex.join(argv if argv is not None else sys.argv[1:])
        update_results(args.results, command, arm_headline({n: results[n] for n in names}))
    print(f"results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
