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
Cityscapes ``val`` signs), the other half of "why is the end-to-end sign score zero":

    python -m training.sign_eval runs/experiments_1000/pixel_boxes_tags/last.pt --limit 40
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from hiseg_ros.engines.checkpoint import load_checkpoint
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from hiseg_ros.model.normalize import normalize_image
from training.metrics import ConfusionMatrix
from training.synthetic import iter_scenes

__all__ = ["leaf_log_probabilities", "root_on_sign_pixels", "sign_confusion_given_location"]


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


def sign_confusion_given_location(checkpoint: Path, data_root: Path, limit: int | None) -> ConfusionMatrix:
    """Confusion (true vs chosen GTSDB class) over the true front-sign pixels of the test scenes."""
    loaded = load_checkpoint(checkpoint)
    hierarchy, net = loaded.hierarchy, loaded.net.eval()
    gtsdb = hierarchy.dataset("gtsdb").ids
    natives = sorted(int(k) for k, node in gtsdb.items() if node is not None)
    leaves = [gtsdb[k] for k in natives]
    cm = ConfusionMatrix(max(natives) + 1)
    for image, truth in _gtsdb_test_scenes(data_root, limit):
        if not (truth != IGNORE).any():
            continue
        with torch.inference_mode():
            logits = net(torch.from_numpy(normalize_image(image)))
            scores = leaf_log_probabilities(hierarchy, logits, leaves)
            scores = functional.interpolate(scores, size=image.shape[:2], mode="nearest")
        chosen = np.asarray(natives, np.uint8)[scores[0].argmax(0).numpy()]
        cm.update(truth, chosen)
    return cm


def root_on_sign_pixels(
    checkpoint: Path, data_root: Path, limit: int | None, cityscapes_sign_id: int = 20
) -> dict[str, dict[str, float]]:
    """Share of each root class among the root's decisions on true sign pixels, per source:
    GTSDB test scenes (front signs) and Cityscapes ``val`` (label id 20, traffic sign)."""
    from hiseg_ros.engines.torch_engine import TorchEngine
    from training.datasets import load_dataset

    engine = TorchEngine(checkpoint)
    root = engine.hierarchy.classifier("root")
    counts = {"gtsdb_test": np.zeros(256, np.int64), "cityscapes_val": np.zeros(256, np.int64)}
    for image, truth in _gtsdb_test_scenes(data_root, limit):
        on_sign = truth != IGNORE
        if on_sign.any():
            counts["gtsdb_test"] += np.bincount(engine.infer(image).per_classifier["root"][on_sign], minlength=256)
    reader = load_dataset("cityscapes", data_root / "cityscapes", split="val")
    for i in range(min(limit or len(reader), len(reader))):
        sample = reader[i]
        on_sign = sample.label == cityscapes_sign_id
        if on_sign.any():
            decided = engine.infer(sample.image).per_classifier["root"][on_sign]
            counts["cityscapes_val"] += np.bincount(decided, minlength=256)
    out = {}
    for source, c in counts.items():
        total = max(int(c.sum()), 1)
        out[source] = {root.classes[k]: float(c[k]) / total for k in np.flatnonzero(c) if k < len(root.classes)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.sign_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--limit", type=int, default=40, help="at most N images per source")
    args = ap.parse_args(argv)
    given = sign_confusion_given_location(args.checkpoint, args.data, args.limit).scores()
    print(
        f"sign classes given the location: mIoU {100 * given.miou:.1f} %, "
        f"pixel accuracy {100 * given.pixel_accuracy:.1f} %"
    )
    for source, shares in root_on_sign_pixels(args.checkpoint, args.data, args.limit).items():
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:4]
        print(f"root on true sign pixels ({source}): " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
