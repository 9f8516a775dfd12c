"""The main job (README command 1): from nothing to checked datasets, on an embedded default.

Today it generates the synthetic datasets in the four real on-disk formats, then reads every
sample back with the project's readers and turns it into training targets of the default
hierarchy, so a format or label-space mismatch fails here and not hours into training. Later
stages (train, export, replay a drive through the node, report) extend this same command.

    python -m training.demo [--data DIR] [--preset small|large] [--hierarchy YAML]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training.datasets import load_dataset
from training.synthetic import generate
from training.targets import TargetBuilder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"

# (dataset, reader arguments) of every split the generator writes.
READ_BACK = (
    ("cityscapes", {"split": "train"}),
    ("cityscapes", {"split": "val"}),
    ("vistas", {"split": "training"}),
    ("vistas", {"split": "validation"}),
    ("gtsdb", {}),
    ("openscapes", {}),
)


@dataclass(frozen=True)
class ReadBack:
    """What reading one dataset split back gave."""

    dataset: str
    split: str
    samples: int
    labelled_pixels: int  # pixels with a root target (per-pixel sets) or a weak target (others)
    boxes: int
    tags: int
    seconds: float

    def format(self) -> str:
        return (
            f"  {self.dataset:<11} {self.split or 'all':<11} {self.samples:>5} samples  "
            f"{self.labelled_pixels:>11,} supervised px  {self.boxes:>4} boxes  {self.tags:>4} tags  "
            f"{self.seconds:5.1f} s"
        )


def read_back(data_root: Path, hierarchy: Hierarchy) -> list[ReadBack]:
    """Read every sample with the readers and build its targets; raises on the first bad file."""
    builder = TargetBuilder(hierarchy)
    results = []
    for name, kwargs in READ_BACK:
        start = time.perf_counter()
        reader = load_dataset(name, data_root / name, **kwargs)
        supervised = boxes = tags = 0
        for sample in reader:
            targets = builder(sample)
            supervised += sum(int((t != 255).sum()) for t in targets.hard.values())
            supervised += sum(int(s.valid.sum()) for s in targets.soft.values())
            boxes += len(sample.boxes)
            tags += len(sample.tags)
        results.append(
            ReadBack(name, kwargs.get("split", ""), len(reader), supervised, boxes, tags, time.perf_counter() - start)
        )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic", help="where the datasets go")
    ap.add_argument("--preset", default="large", help="synthetic preset (small: seconds, large: training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hierarchy", type=Path, default=DEFAULT_HIERARCHY)
    args = ap.parse_args(argv)

    hierarchy = load_hierarchy(args.hierarchy)
    print(f"[1/2] synthetic datasets ({args.preset} preset) -> {args.data}", flush=True)
    summary = generate(args.data, args.preset, args.seed, args.workers, progress=args.preset != "small")
    print(summary.format())
    print(f"[2/2] reading every sample back and building {hierarchy.name} targets", flush=True)
    for result in read_back(args.data, hierarchy):
        print(result.format())
    print(f"done: datasets in {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
