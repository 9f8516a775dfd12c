"""Sign classification given the sign's location: how well a network names the 43 GTSDB classes on
pixels that are known to be front signs, independently of whether it found the sign.

The end-to-end sign score (the flattened map on true sign pixels) is zero until the root classifier
labels sign pixels *traffic sign*, which for small objects takes a long schedule. This measure
separates the two questions. For every true front-sign pixel each GTSDB leaf gets the log-probability
of its path through the hierarchy, ``sum over (classifier, class) on the path of log_softmax``, and
the predicted class is the best of the 43 sign leaves. For a hierarchical network the shared prefix
(root -> traffic sign -> front) is the same for all 43 leaves, so this is the sign sub-classifier's
own argmax; for a flat network it is the root's argmax restricted to the 43 sign leaves. The same
rule therefore compares both kinds of network on the same question.

As a command it also says what the root decides on true sign pixels (GTSDB test scenes and
Cityscapes ``val`` signs), the other half of "why is the end-to-end sign score zero"
(``python -m training.evaluation.signs --help``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from hiseg_ros.model.normalize import normalize_image
from training.data.synthetic import iter_scenes
from training.evaluation.metrics import ConfusionMatrix

__all__ = ["SignEvaluation", "evaluate_signs", "leaf_log_probabilities", "root_on_cityscapes_signs"]


def leaf_log_probabilities(hierarchy: Hierarchy, logits: Mapping[str, torch.Tensor], leaves: list[str]) -> torch.Tensor:
    """``B x len(leaves) x h x w``: log p(leaf) as the sum of the path's per-classifier log-softmax."""
    log_soft = {name: functional.log_softmax(value, dim=1) for name, value in logits.items()}
    planes = []
    for leaf in leaves:
        steps = hierarchy.path(leaf)
        planes.append(sum(log_soft[clf][:, index] for clf, index in steps))
    return torch.stack(planes, dim=1)


def _gtsdb_test_scenes(data_root: Path, limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image, true GTSDB class per pixel or IGNORE) of the held-out synthetic GTSDB test scenes."""
    info = json.loads((data_root / "gtsdb" / "synthetic.json").read_text())["settings"]
    done = 0
    for task, scene in iter_scenes("gtsdb", info["preset"], info["seed"], info["scale"]):
        if task.split != "test":
            continue
        yield scene.image, scene.sign_classes()
        done += 1
        if limit and done >= limit:
            return


@dataclass
class SignEvaluation:
    """What a network does on the true front-sign pixels of the held-out GTSDB test scenes."""

    end_to_end: ConfusionMatrix  # true GTSDB class vs the class of the flattened leaf map
    given_location: ConfusionMatrix  # true GTSDB class vs the best sign leaf by path log-probability
    root_counts: np.ndarray  # how often the root decided each of its classes (index = class)


def evaluate_signs(engine: TorchEngine, data_root: Path, limit: int | None) -> SignEvaluation:
    """Both sign scores and the root's decisions in one pass over the GTSDB test scenes (each scene is
    rendered once and the engine's network serves both the decisions and the logits)."""
    hierarchy = engine.hierarchy
    net = engine.checkpoint.net
    gtsdb = hierarchy.dataset("gtsdb").ids
    natives = sorted(int(k) for k, node in gtsdb.items() if node is not None)
    leaves = [gtsdb[k] for k in natives]
    leaf_to_native = np.full(hierarchy.void_value + 1, IGNORE, np.uint8)
    for native, leaf in zip(natives, leaves, strict=True):
        leaf_to_native[hierarchy.node(leaf).id] = native
    result = SignEvaluation(
        ConfusionMatrix(max(natives) + 1), ConfusionMatrix(max(natives) + 1), np.zeros(256, np.int64)
    )
    for image, truth in _gtsdb_test_scenes(data_root, limit):
        on_sign = truth != IGNORE
        if not on_sign.any():
            continue
        decisions = engine.infer(image)
        result.end_to_end.update(truth, leaf_to_native[decisions.leaf])
        result.root_counts += np.bincount(decisions.per_classifier["root"][on_sign], minlength=256)
        with torch.inference_mode():
            logits = net(torch.from_numpy(normalize_image(image)))
            scores = leaf_log_probabilities(hierarchy, logits, leaves)
            scores = functional.interpolate(scores, size=image.shape[:2], mode="nearest")
        result.given_location.update(truth, np.asarray(natives, np.uint8)[scores[0].argmax(0).numpy()])
    return result


def root_on_cityscapes_signs(engine: TorchEngine, data_root: Path, limit: int | None, sign_id: int = 20) -> np.ndarray:
    """How often the root decided each class on Cityscapes ``val`` traffic-sign pixels (label id 20)."""
    from training.data.readers import load_dataset

    counts = np.zeros(256, np.int64)
    reader = load_dataset("cityscapes", data_root / "cityscapes", split="val")
    for i in range(min(limit or len(reader), len(reader))):
        sample = reader[i]
        on_sign = sample.label == sign_id
        if on_sign.any():
            counts += np.bincount(engine.infer(sample.image).per_classifier["root"][on_sign], minlength=256)
    return counts


def _shares(classes: tuple[str, ...], counts: np.ndarray) -> str:
    total = max(int(counts.sum()), 1)
    top = sorted((k for k in np.flatnonzero(counts) if k < len(classes)), key=lambda k: -counts[k])[:4]
    return ", ".join(f"{classes[k]} {100 * counts[k] / total:.1f} %" for k in top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.signs", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--limit", type=int, default=40, help="at most N images per source")
    args = ap.parse_args(argv)
    engine = TorchEngine(args.checkpoint)
    signs = evaluate_signs(engine, args.data, args.limit)
    given = signs.given_location.scores()
    print(
        f"sign classes given the location: mIoU {100 * given.miou:.1f} %, "
        f"pixel accuracy {100 * given.pixel_accuracy:.1f} %"
    )
    root = engine.hierarchy.classifier("root").classes
    print(f"root on true sign pixels (gtsdb_test): {_shares(root, signs.root_counts)}")
    cityscapes = root_on_cityscapes_signs(engine, args.data, args.limit)
    print(f"root on true sign pixels (cityscapes_val): {_shares(root, cityscapes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
