"""Scoring of the weak-only experiment: leaf IoU against the *full* labels, on three held-out sets.

The network was trained with a hierarchy whose per-pixel tables stop at "vehicle" for truck / bus /
train, so its own targets would ignore exactly the pixels that matter. It is therefore scored with
the full hierarchy (iv2019: same tree, every dataset id at its leaf): the flattened leaf map against
the leaf each pixel truly is, per leaf (19 Cityscapes classes), plus the per-classifier view of
:class:`~training.evaluation.evaluate.Evaluator` (root / human / vehicle). Sets:

* ``tags``: the tag set's own held-out images (its ``validation`` split) against the renderer's true
  masks (``ground_truth/{id}_vistas.png``, Vistas v1.2 ids): what tags must teach;
* ``cityscapes`` ``val`` and ``vistas`` ``validation``: the per-pixel sets, which must not get worse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiseg_ros.hierarchy import IGNORE, Hierarchy
from training.data.readers import load_dataset
from training.data.readers.base import read_index_png
from training.evaluation.evaluate import Evaluator
from training.evaluation.metrics import ConfusionMatrix
from training.labels.pseudo_labels.batch import split_ids

WEAK_ONLY_LEAVES = ("truck", "bus", "train")
Predict = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # image -> per-classifier decisions


def same_tree(trained: Hierarchy, full: Hierarchy) -> None:
    """The full hierarchy must read the trained network's decisions: same classifiers, same class order."""
    mine = [(c.name, c.classes) for c in trained.classifiers]
    theirs = [(c.name, c.classes) for c in full.classifiers]
    if mine != theirs:
        raise ValueError(
            f"hierarchy {full.name!r} ({full.source}) cannot score a network of {trained.name!r}: "
            f"classifiers {theirs} differ from {mine}"
        )


def native_to_leaf_lut(hierarchy: Hierarchy, dataset: str) -> np.ndarray:
    """LUT native id -> leaf id under ``hierarchy`` (:data:`IGNORE` for ids mapped to nothing or to an inner class)."""
    ids = hierarchy.dataset(dataset).ids
    lut = np.full(max(int(k) for k in ids) + 1, IGNORE, np.uint8)
    leaves = {leaf.name: leaf.id for leaf in hierarchy.leaves}
    for native, node in ids.items():
        if int(native) >= 0 and node in leaves:
            lut[int(native)] = leaves[node]
    return lut


@dataclass
class SetScore:
    """Leaf and per-classifier confusion of one evaluation set."""

    hierarchy: Hierarchy
    label_space: str  # the dataset whose native ids the truth holds (the tag set's truth: "vistas")
    leaf: ConfusionMatrix
    evaluator: Evaluator
    images: int = 0

    @classmethod
    def empty(cls, hierarchy: Hierarchy, label_space: str) -> SetScore:
        n = hierarchy.max_leaf_id + 1
        return cls(hierarchy, label_space, ConfusionMatrix(n), Evaluator(hierarchy))

    def add(self, label: np.ndarray, decisions: Mapping[str, np.ndarray]) -> None:
        leaf_map = self.evaluator.add(self.label_space, label, decisions)  # also checks the native ids
        self.leaf.update(native_to_leaf_lut(self.hierarchy, self.label_space)[label], leaf_map)
        self.images += 1

    def to_dict(self) -> dict:
        """Fractions in [0, 1]; None where a score is undefined (leaf neither true nor predicted)."""
        scores = self.leaf.scores()
        names = {leaf.id: leaf.name for leaf in self.hierarchy.leaves}
        iou = {names[i]: _finite(v) for i, v in enumerate(scores.iou) if i in names}
        weak = [iou[n] for n in WEAK_ONLY_LEAVES if iou.get(n) is not None]
        report = self.evaluator.report().to_dict()
        return {
            "images": self.images,
            "weak_only_miou": sum(weak) / len(weak) if weak else None,
            "leaf_miou": _finite(scores.miou),
            "iou": iou,
            "classifiers": {k: v["miou"] for k, v in report["classifiers"].items()},
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def tag_set_samples(tags_dir: Path, split: str = "validation", limit: int | None = None) -> Iterator:
    """(image, Vistas-id truth) of the tag set's ``split``, in reader order, at most ``limit``."""
    reader = load_dataset("openscapes", tags_dir)
    wanted = split_ids(tags_dir, split) or set()
    ids = [i for i, s in enumerate(reader.sample_ids) if s in wanted][:limit]
    if not ids:
        raise ValueError(f"{tags_dir}: the {split!r} split has no images")
    for i in ids:
        sample = reader[i]
        truth = read_index_png(tags_dir / "ground_truth" / f"{sample.sample_id}_vistas.png")
        if truth.shape != sample.image.shape[:2]:
            raise ValueError(
                f"{tags_dir}/ground_truth/{sample.sample_id}_vistas.png: {truth.shape} is not the image size"
            )
        yield sample.image, truth


def pixel_set_samples(root: Path, dataset: str, split: str, limit: int | None = None) -> Iterator:
    reader = load_dataset(dataset, root, split=split)
    for i in range(len(reader) if not limit else min(limit, len(reader))):
        sample = reader[i]
        yield sample.image, sample.label


def score_network(
    predict: Predict,
    full: Hierarchy,
    data_root: Path,
    tags_dir: Path,
    limit: int | None = None,
) -> dict[str, dict]:
    """:class:`SetScore` dicts of the three sets (see the module docstring)."""
    sets = {
        "tags": ("vistas", tag_set_samples(tags_dir, "validation", limit)),
        "cityscapes": ("cityscapes", pixel_set_samples(data_root / "cityscapes", "cityscapes", "val", limit)),
        "vistas": ("vistas", pixel_set_samples(data_root / "vistas", "vistas", "validation", limit)),
    }
    out = {}
    for name, (space, samples) in sets.items():
        score = SetScore.empty(full, space)
        for image, label in samples:
            score.add(label, predict(image))
        out[name] = score.to_dict()
    return out
