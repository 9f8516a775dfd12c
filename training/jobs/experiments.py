"""Experiments on the synthetic data: what each kind of supervision adds,
and hierarchical vs flat classifiers, trained and evaluated with the project's own code.

Variants (all start from config/training/default.yaml and differ only where named):

- ``pixel``: Cityscapes + Vistas per-pixel labels only;
- ``pixel_boxes``: + GTSDB boxes (train images only; the test images are held out);
- ``pixel_boxes_tags``: + OpenScapes-style image-level tags;
- ``flat``: the same data as ``pixel_boxes_tags`` with one classifier over the same leaves
  (``iv2018_flat.yaml``); boxes and tags are allowed to train its root (``supervise_root``),
  since it has nothing else they could train.

Weak-label variants (run only when named in ``--variants``), IV 2019 hierarchy (root +
``human`` and ``vehicle`` sub-classifiers, which the OpenScapes tags car/bus/truck/train/person/...
reach), Cityscapes + Vistas + the OpenScapes ``train`` split (a view folder of symlinks under
``OUT/_data``; its validation images are never trained on):

- ``tags_uniform_iv2019``: the tags as IV 2019 uniform tiling;
- ``tags_pseudo_iv2019``: the tags as the pseudo labels precomputed by ``python -m
  training.labels.pseudo_labels generate --split train --hierarchy config/hierarchies/iv2019.yaml``
  (``pseudo_labels.precomputed``; folder ``--pseudo-labels``).

The comparison is the ``human`` / ``vehicle`` mIoU (second table of ``results.md``).

Evaluation on held-out scenes: Cityscapes ``val`` and Vistas ``validation`` (per-classifier mIoU
and each dataset's own label space) and the GTSDB test images, whose per-pixel sign classes the
renderer knows: sign-class mIoU over the 43 GTSDB leaves on true front-sign pixels of the
flattened map (identical for hierarchical and flat networks), and the same "given the location"
(training/evaluation/signs.py: the best of the 43 sign leaves by path log-probability, whether or not the
network labels the pixel a sign).

Options: ``python -m training.jobs.experiments --help``; the runs behind docs/RESULTS*.md and their
commands are listed there.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import Hierarchy
from training import REPO
from training.data.readers import load_dataset
from training.evaluation.evaluate import Evaluator
from training.evaluation.metrics import pct
from training.evaluation.signs import evaluate_signs
from training.labels.pseudo_labels.batch import split_ids

BASE_CONFIG = REPO / "config" / "training" / "default.yaml"
HIERARCHIES = REPO / "config" / "hierarchies"


DEFAULT_PSEUDO_LABELS = REPO / "runs" / "pseudo_labels" / "openscapes_train_iv2019_hard"
TAGS = "openscapes"


@dataclass(frozen=True)
class Variant:
    """One training setup; ``tags_split`` trains on one synthetic split of the tag set only, and
    ``precomputed`` replaces its uniform tiling by precomputed pseudo labels (``--pseudo-labels``)."""

    name: str
    hierarchy: str
    datasets: tuple[str, ...]
    supervise_root: bool = False
    tags_split: str | None = None
    precomputed: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant("pixel", "iv2018.yaml", ("cityscapes", "vistas")),
        Variant("pixel_boxes", "iv2018.yaml", ("cityscapes", "vistas", "gtsdb")),
        Variant("pixel_boxes_tags", "iv2018.yaml", ("cityscapes", "vistas", "gtsdb", "openscapes")),
        Variant("flat", "iv2018_flat.yaml", ("cityscapes", "vistas", "gtsdb", "openscapes"), supervise_root=True),
        Variant("tags_uniform_iv2019", "iv2019.yaml", ("cityscapes", "vistas", "openscapes"), tags_split="train"),
        Variant(
            "tags_pseudo_iv2019",
            "iv2019.yaml",
            ("cityscapes", "vistas", "openscapes"),
            tags_split="train",
            precomputed=True,
        ),
    )
}
DEFAULT_VARIANTS = ("pixel", "pixel_boxes", "pixel_boxes_tags", "flat")  # the table of docs/RESULTS.md
LOSS_WEIGHTS = {  # None: the base config's weights (they name the IV 2018 classifiers)
    "iv2018.yaml": None,
    "iv2018_flat.yaml": {"root": 1.0},
    "iv2019.yaml": {"root": 1.0, "human": 0.1, "vehicle": 0.1},
}


def tag_split_view(data_root: Path, split: str, out: Path) -> Path:
    """An image-tags folder with only ``split``'s images: symlinked images, CSVs filtered to them.

    The tag reader indexes a whole folder and the synthetic set keeps its splits in one folder
    (``synthetic.json``), so this is how a run trains on the ``train`` images only: the ones the
    pseudo labels are generated for (``generate --split train``), never the held-out validation ones.
    Rebuilt on every call (cheap); sample ids are unchanged, so label files match by name.
    """
    src = data_root / TAGS
    keep = split_ids(data_root / TAGS, split)
    view = out / f"{TAGS}_{split}"
    images = view / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old_link in images.iterdir():
        old_link.unlink()
    for sample_id in sorted(keep):
        (images / f"{sample_id}.jpg").symlink_to((src / "images" / f"{sample_id}.jpg").resolve())
    (view / "class-descriptions.csv").write_bytes((src / "class-descriptions.csv").read_bytes())
    for name in ("image-labels.csv", "boxes.csv"):
        if not (src / name).is_file():
            continue
        with open(src / name, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        with open(view / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r and r[0] in keep)])
    return view


def missing_pseudo_labels(label_dir: Path, sample_ids: list[str]) -> list[str]:
    """Sample ids without a hard pseudo-label PNG in ``label_dir`` (checked before a long training)."""
    return [i for i in sample_ids if not (label_dir / f"{i}.png").is_file()]


def variant_config(
    variant: Variant,
    data_root: Path,
    iterations: int,
    crop: tuple[int, int],
    out: Path,
    tags_root: Path | None = None,
    pseudo_labels: Path | None = None,
) -> dict:
    """The base training config with this variant's hierarchy, datasets and schedule.

    ``tags_root``: the tag set's folder (the :func:`tag_split_view` of ``variant.tags_split``);
    ``pseudo_labels``: the precomputed label folder of a ``precomputed`` variant.
    """
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw = copy.deepcopy(raw)
    raw["hierarchy"] = str(HIERARCHIES / variant.hierarchy)
    raw["data_root"] = str(data_root)
    datasets = []
    for entry in raw["datasets"]:
        if entry["name"] not in variant.datasets:
            continue
        if entry["name"] == "gtsdb":  # the reader's split (gtsdb.SPLITS): the test scenes stay held out
            entry = dict(entry, options={**entry.get("options", {}), "split": "train"})
        if entry["name"] == TAGS and tags_root is not None:
            entry = dict(entry, root=str(tags_root))  # absolute: not joined with data_root
        datasets.append(entry)
    if variant.tags_split is not None and tags_root is None:
        raise ValueError(f"variant {variant.name}: trains on the {variant.tags_split!r} split only; give tags_root")
    raw["datasets"] = datasets
    raw["augment"]["crop"] = list(crop)
    raw["schedule"]["iterations"] = iterations
    raw["pseudo_labels"]["supervise_root"] = variant.supervise_root
    if variant.precomputed:
        if pseudo_labels is None:
            raise ValueError(f"variant {variant.name}: needs the precomputed pseudo-label folder")
        raw["pseudo_labels"]["precomputed"] = {TAGS: {"dir": str(Path(pseudo_labels).resolve()), "output": "hard"}}
    if LOSS_WEIGHTS[variant.hierarchy] is not None:
        raw["loss"]["weights"] = LOSS_WEIGHTS[variant.hierarchy]
    raw["run"].update({"out_dir": str(out), "num_workers": 0, "log_every": 10})
    raw["checkpoint"].update({"every": iterations, "keep": 1})
    return raw


def train_variant(
    variant: Variant,
    data_root: Path,
    iterations: int,
    crop: tuple[int, int],
    out: Path,
    pseudo_labels: Path | None = None,
) -> Path:
    """Train in a subprocess (exactly the user's command); return the final checkpoint.

    A ``tags_split`` variant trains on a view of that split under ``out.parent / "_data"``.
    """
    out.mkdir(parents=True, exist_ok=True)
    tags_root = None
    if variant.tags_split is not None:
        tags_root = tag_split_view(data_root, variant.tags_split, out.parent / "_data")
    config_path = out / "experiment_config.yaml"
    raw = variant_config(variant, data_root, iterations, crop, out, tags_root, pseudo_labels)
    config_path.write_text(yaml.safe_dump(raw))
    checkpoint = out / "last.pt"
    if checkpoint.is_file():
        return checkpoint  # trained earlier with this same command
    cmd = [sys.executable, "-m", "training.fit.train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True)
    return checkpoint


def evaluate_variant(checkpoint: Path, data_root: Path, limit: int | None) -> dict:
    engine = TorchEngine(checkpoint)
    hierarchy = engine.hierarchy
    evaluator = Evaluator(hierarchy)
    for name, split in (("cityscapes", "val"), ("vistas", "validation")):
        reader = load_dataset(name, data_root / name, split=split)
        for i in range(len(reader) if not limit else min(limit, len(reader))):
            sample = reader[i]
            evaluator.add(name, sample.label, engine.infer(sample.image).per_classifier)
    report = evaluator.report().to_dict()
    result = {
        "classifiers": {k: v["miou"] for k, v in report["classifiers"].items()},
        "datasets": {k: v["miou"] for k, v in report["datasets"].items()},
        # per-class IoU in Cityscapes' 19 classes: "traffic sign" is where the root (hierarchical) or
        # the single classifier (flat) put a sign, comparable between the two
        "cityscapes_classes": {c["name"]: c["iou"] for c in report["datasets"]["cityscapes"]["classes"]},
        "signs": {"miou": None, "pixel_accuracy": None},
        "signs_given_location": {"miou": None, "pixel_accuracy": None},
    }
    if resolves_sign_classes(hierarchy):
        signs = evaluate_signs(engine, data_root, limit, modes=("deployed",)).modes["deployed"]
        for key, cm in (("signs", signs.on_sign_pixels), ("signs_given_location", signs.given_location)):
            scores = cm.scores()
            result[key] = {"miou": _finite(scores.miou), "pixel_accuracy": _finite(scores.pixel_accuracy)}
    return result


def resolves_sign_classes(hierarchy: Hierarchy) -> bool:
    """Whether every GTSDB class has a leaf of its own (iv2019 maps all 43 onto ``traffic-sign``)."""
    if "gtsdb" not in hierarchy.datasets:
        return False
    nodes = [n for n in hierarchy.dataset("gtsdb").ids.values() if n is not None]
    return len(set(nodes)) == len(nodes)


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


IV2018_CLASSIFIERS = {"root", "drivable", "rider", "traffic_sign", "traffic_sign_front"}


def results_tables(results: dict[str, dict]) -> str:
    """:func:`results_table` for the IV 2018 / flat variants, then one :func:`classifier_table` per
    other set of classifiers (e.g. iv2019: root / human / vehicle), separated by a blank line."""
    legacy = {n: r for n, r in results.items() if set(r["classifiers"]) <= IV2018_CLASSIFIERS}
    groups: dict[tuple[str, ...], dict[str, dict]] = {}
    for name, r in results.items():
        if name not in legacy:
            groups.setdefault(tuple(r["classifiers"]), {})[name] = r
    tables = [results_table(legacy)] if legacy else []
    tables += [classifier_table(group) for group in groups.values()]
    return "\n\n".join(tables)


def classifier_table(results: dict[str, dict]) -> str:
    """Markdown table with a column per classifier the variants have (first variant's order), then
    dataset mIoU: for hierarchies whose sub-classifiers the IV 2018 table does not show."""
    classifiers = list(dict.fromkeys(c for r in results.values() for c in r["classifiers"]))
    head = "| variant | " + " | ".join(classifiers) + " | Cityscapes | Vistas | train s |"
    lines = [head, "|" + "---|" * (len(classifiers) + 4)]
    for name, r in results.items():
        c, d = r["classifiers"], r["datasets"]
        cells = [pct(c.get(k), 1) for k in classifiers] + [pct(d.get("cityscapes"), 1), pct(d.get("vistas"), 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def results_table(results: dict[str, dict]) -> str:
    """Markdown table: per-classifier mIoU, dataset mIoU, sign-class mIoU (%) per variant."""
    head = (
        "| variant | root | drivable | rider | traffic_sign | Cityscapes (19) | Vistas (65) "
        "| GTSDB sign classes (43) | sign px acc | given location: mIoU | given location: px acc | train s |"
    )
    lines = [head, "|" + "---|" * 12]
    for name, r in results.items():
        c, d, s = r["classifiers"], r["datasets"], r["signs"]
        g = r.get("signs_given_location", {})
        lines.append(
            f"| {name} | {pct(c.get('root'), 1)} | {pct(c.get('drivable'), 1)} | {pct(c.get('rider'), 1)} | "
            f"{pct(c.get('traffic_sign'), 1)} | {pct(d.get('cityscapes'), 1)} | {pct(d.get('vistas'), 1)} | "
            f"{pct(s['miou'], 1)} | {pct(s['pixel_accuracy'], 1)} | {pct(g.get('miou'), 1)} | "
            f"{pct(g.get('pixel_accuracy'), 1)} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.jobs.experiments", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "experiments")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument(
        "--pseudo-labels",
        type=Path,
        default=DEFAULT_PSEUDO_LABELS,
        help="precomputed pseudo labels of the tag set's train split, iv2019 (tags_pseudo_iv2019)",
    )
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--crop", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--limit", type=int, default=None, help="evaluate at most N images per dataset")
    args = ap.parse_args(argv)
    # the variants' configs name these paths; relative ones would resolve against the config or data root
    args.data, args.out, args.pseudo_labels = (p.resolve() for p in (args.data, args.out, args.pseudo_labels))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown} (known: {list(VARIANTS)})", file=sys.stderr)
        return 2
    for name in names:
        variant = VARIANTS[name]
        if variant.precomputed:  # a missing label stops training mid-way: check all of them first
            ids = sorted(split_ids(args.data / TAGS, variant.tags_split)) if variant.tags_split else None
            if not args.pseudo_labels.is_dir():
                print(f"error: {name}: no pseudo-label folder {args.pseudo_labels} (see --help)", file=sys.stderr)
                return 2
            missing = missing_pseudo_labels(args.pseudo_labels, ids or [])
            if missing:
                print(
                    f"error: {name}: {len(missing)} images of the {variant.tags_split} split have no label in "
                    f"{args.pseudo_labels} (e.g. {missing[:3]}); generate them first",
                    file=sys.stderr,
                )
                return 2
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in names:
        start = time.perf_counter()
        checkpoint = train_variant(
            VARIANTS[name], args.data, args.iterations, tuple(args.crop), args.out / name, args.pseudo_labels
        )
        train_seconds = results.get(name, {}).get("train_seconds") or time.perf_counter() - start
        print(f"[{name}] trained ({train_seconds:.0f} s), evaluating", flush=True)
        results[name] = evaluate_variant(checkpoint, args.data, args.limit) | {
            "train_seconds": train_seconds,
            "iterations": args.iterations,
            "crop": list(args.crop),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(results_path, json.dumps(results, indent=2).encode())
    table = results_tables({n: results[n] for n in names})
    atomic_write_bytes(args.out / "results.md", (table + "\n").encode())
    print(table)
    print(f"threads: torch {os.environ.get('OMP_NUM_THREADS', 'default')}; results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
