"""The Training issue's experiments on the synthetic data: what each kind of supervision adds,
and hierarchical vs flat classifiers, trained and evaluated with the project's own code.

Variants (all start from config/training/default.yaml and differ only where named):

- ``pixel``: Cityscapes + Vistas per-pixel labels only;
- ``pixel_boxes``: + GTSDB boxes (train images only; the test images are held out);
- ``pixel_boxes_tags``: + OpenScapes-style image-level tags;
- ``flat``: the same data as ``pixel_boxes_tags`` with one classifier over the same leaves
  (``iv2018_flat.yaml``); boxes and tags are allowed to train its root (``supervise_root``),
  since it has nothing else they could train.

Evaluation on held-out scenes: Cityscapes ``val`` and Vistas ``validation`` (per-classifier mIoU
and each dataset's own label space) and the GTSDB test images, whose per-pixel sign classes the
renderer knows: sign-class mIoU over the 43 GTSDB leaves on true front-sign pixels of the
flattened map (identical for hierarchical and flat networks).

    python -m training.experiments --iterations 300 --out runs/experiments [--variants pixel,flat]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from training.datasets import load_dataset
from training.evaluate import Evaluator, atomic_write
from training.metrics import ConfusionMatrix
from training.synthetic import iter_scenes

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "config" / "training" / "default.yaml"
HIERARCHIES = REPO / "config" / "hierarchies"


@dataclass(frozen=True)
class Variant:
    name: str
    hierarchy: str
    datasets: tuple[str, ...]
    supervise_root: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant("pixel", "iv2018.yaml", ("cityscapes", "vistas")),
        Variant("pixel_boxes", "iv2018.yaml", ("cityscapes", "vistas", "gtsdb")),
        Variant("pixel_boxes_tags", "iv2018.yaml", ("cityscapes", "vistas", "gtsdb", "openscapes")),
        Variant("flat", "iv2018_flat.yaml", ("cityscapes", "vistas", "gtsdb", "openscapes"), supervise_root=True),
    )
}


def _split_members(data_root: Path, dataset: str) -> dict[str, list[str]]:
    info = json.loads((data_root / dataset / "synthetic.json").read_text())
    return info["split_members"]


def variant_config(variant: Variant, data_root: Path, iterations: int, crop: tuple[int, int], out: Path) -> dict:
    """The base training config with this variant's hierarchy, datasets and schedule."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    raw = copy.deepcopy(raw)
    raw["hierarchy"] = str(HIERARCHIES / variant.hierarchy)
    raw["data_root"] = str(data_root)
    gtsdb_train = [int(Path(n).stem) for n in _split_members(data_root, "gtsdb")["train"]]
    datasets = []
    for entry in raw["datasets"]:
        if entry["name"] not in variant.datasets:
            continue
        if entry["name"] == "gtsdb":
            entry = dict(entry, options={"image_ids": gtsdb_train})
        datasets.append(entry)
    raw["datasets"] = datasets
    raw["augment"]["crop"] = list(crop)
    raw["schedule"]["iterations"] = iterations
    raw["pseudo_labels"]["supervise_root"] = variant.supervise_root
    hierarchy_classifiers = {"iv2018.yaml": None, "iv2018_flat.yaml": {"root": 1.0}}
    if hierarchy_classifiers[variant.hierarchy] is not None:
        raw["loss"]["weights"] = hierarchy_classifiers[variant.hierarchy]
    raw["run"].update({"out_dir": str(out), "num_workers": 0, "log_every": 10})
    raw["checkpoint"].update({"every": iterations, "keep": 1})
    return raw


def train_variant(variant: Variant, data_root: Path, iterations: int, crop: tuple[int, int], out: Path) -> Path:
    """Train in a subprocess (exactly the user's command); return the final checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "experiment_config.yaml"
    config_path.write_text(yaml.safe_dump(variant_config(variant, data_root, iterations, crop, out)))
    checkpoint = out / "last.pt"
    if checkpoint.is_file():
        return checkpoint  # trained earlier with this same command
    cmd = [sys.executable, "-m", "training.train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    subprocess.run(cmd, cwd=REPO, check=True)
    return checkpoint


def sign_confusion(engine: TorchEngine, hierarchy: Hierarchy, data_root: Path, limit: int | None) -> ConfusionMatrix:
    """GTSDB test scenes: predicted leaf vs true GTSDB class on the true front-sign pixels."""
    info = json.loads((data_root / "gtsdb" / "synthetic.json").read_text())["settings"]
    sign_ids = np.full(hierarchy.void_value + 1, IGNORE, np.uint8)  # leaf id -> GTSDB class
    gtsdb_ids = hierarchy.dataset("gtsdb").ids
    for native, node in gtsdb_ids.items():
        sign_ids[hierarchy.node(node).id] = int(native)
    cm = ConfusionMatrix(len(gtsdb_ids))
    done = 0
    for task, scene in iter_scenes("gtsdb", info["preset"], info["seed"], info["scale"]):
        if task.split != "test":
            continue
        truth = scene.sign_classes()
        if (truth != IGNORE).any():
            cm.update(truth, sign_ids[engine.infer(scene.image).leaf])
        done += 1
        if limit and done >= limit:
            break
    return cm


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
    signs = sign_confusion(engine, hierarchy, data_root, limit).scores()
    return {
        "classifiers": {k: v["miou"] for k, v in report["classifiers"].items()},
        "datasets": {k: v["miou"] for k, v in report["datasets"].items()},
        "signs": {"miou": _finite(signs.miou), "pixel_accuracy": _finite(signs.pixel_accuracy)},
    }


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def results_table(results: dict[str, dict]) -> str:
    """Markdown table: per-classifier mIoU, dataset mIoU, sign-class mIoU (%) per variant."""
    head = (
        "| variant | root | drivable | rider | traffic_sign | Cityscapes (19) | Vistas (65) "
        "| GTSDB sign classes (43) | sign px acc | train s |"
    )
    lines = [head, "|" + "---|" * 10]
    for name, r in results.items():
        c, d, s = r["classifiers"], r["datasets"], r["signs"]
        lines.append(
            f"| {name} | {_pct(c.get('root'))} | {_pct(c.get('drivable'))} | {_pct(c.get('rider'))} | "
            f"{_pct(c.get('traffic_sign'))} | {_pct(d.get('cityscapes'))} | {_pct(d.get('vistas'))} | "
            f"{_pct(s['miou'])} | {_pct(s['pixel_accuracy'])} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "experiments")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--crop", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--limit", type=int, default=None, help="evaluate at most N images per dataset")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown} (known: {list(VARIANTS)})", file=sys.stderr)
        return 2
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in names:
        start = time.perf_counter()
        checkpoint = train_variant(VARIANTS[name], args.data, args.iterations, tuple(args.crop), args.out / name)
        train_seconds = results.get(name, {}).get("train_seconds") or time.perf_counter() - start
        print(f"[{name}] trained ({train_seconds:.0f} s), evaluating", flush=True)
        results[name] = evaluate_variant(checkpoint, args.data, args.limit) | {
            "train_seconds": train_seconds,
            "iterations": args.iterations,
            "crop": list(args.crop),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write(results_path, json.dumps(results, indent=2).encode())
    table = results_table({n: results[n] for n in names})
    atomic_write(args.out / "results.md", (table + "\n").encode())
    print(table)
    print(f"threads: torch {os.environ.get('OMP_NUM_THREADS', 'default')}; results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
