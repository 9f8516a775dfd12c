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
"""

from __future__ import annotations

import json
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

__all__ = ["leaf_log_probabilities", "sign_confusion_given_location"]


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
