"""Traffic-sign ground truth of a drive: the ``<stem>_signs.json`` sidecar in, ``Detection2DArray`` out and back.

The Cityscapes files keep no sign class (traffic sign is no instance class there), so the synthetic
Cityscapes writer adds ``gtFine/<split>/<city>/<city>_<seq>_<frame>_signs.json`` (a project
extension, docs/DATASET_FORMATS.md): ``{"imgHeight", "imgWidth", "signs": [{"bbox": [x0, y0, x1, y1],
"gtsdb_class": c}]}``, inclusive boxes of the visible front signs and their GTSDB class ids.

In a bag the truth is a ``vision_msgs/msg/Detection2DArray`` (default topic
:data:`~training.evaluation.bags.read.DEFAULT_SIGN_TOPIC`) with the camera frame's header stamp,
built like the node's ``~/traffic_signs`` (:func:`hiseg_ros.messages.detection_array`): one
Detection2D per sign, ``class_id`` = the name the hierarchy gives its GTSDB class (the name the
node publishes), score 1. Reading either back gives :class:`~hiseg_ros.outputs.SignDetection`
objects, so the truth and the node's detections are scored alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.outputs import SignDetection

SIDECAR_SUFFIX = "_signs.json"
LABEL_SUFFIX = "_gtFine_labelIds.png"
UNKNOWN_LEAF = -1  # leaf id of a sign read from a message (messages carry the class name only)


def sidecar_path(label_path: Path) -> Path:
    """The ``_signs.json`` beside a Cityscapes ``_gtFine_labelIds.png``."""
    name = label_path.name
    stem = name[: -len(LABEL_SUFFIX)] if name.endswith(LABEL_SUFFIX) else label_path.stem
    return label_path.with_name(stem + SIDECAR_SUFFIX)


def gtsdb_names(hierarchy: Hierarchy) -> dict[int, tuple[int, str]]:
    """GTSDB class id -> (leaf id, leaf name) in ``hierarchy`` (its ``gtsdb`` dataset mapping)."""
    ids = hierarchy.dataset("gtsdb").ids
    return {int(k): (hierarchy.node(name).id, name) for k, name in ids.items() if name is not None}


def read_sidecar(path: Path, hierarchy: Hierarchy) -> tuple[list[SignDetection], tuple[int, int]]:
    """The sidecar's signs named through ``hierarchy`` and the image size (height, width) it refers to.

    Raises ``ValueError`` naming the file (and the sign) when it is not one.
    """
    try:
        data = json.loads(path.read_text())
        size = (int(data["imgHeight"]), int(data["imgWidth"]))
        entries = list(data["signs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a signs sidecar ({type(exc).__name__}: {exc})") from exc
    names = gtsdb_names(hierarchy)
    signs = []
    for n, entry in enumerate(entries):
        try:
            x0, y0, x1, y1 = (int(v) for v in entry["bbox"])
            leaf_id, name = names[int(entry["gtsdb_class"])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: sign {n}: no bbox [x0, y0, x1, y1] / known gtsdb_class ({exc})") from exc
        if x1 < x0 or y1 < y0:
            raise ValueError(f"{path}: sign {n}: empty box {[x0, y0, x1, y1]}")
        w, h = x1 - x0 + 1, y1 - y0 + 1
        signs.append(SignDetection(x0, y0, w, h, w * h, leaf_id, name, 1.0))
    return signs, size


def scale_signs(
    signs: Sequence[SignDetection], from_hw: tuple[int, int], to_hw: tuple[int, int]
) -> list[SignDetection]:
    """The boxes of an image of ``from_hw`` in the same image resized to ``to_hw`` (inclusive pixel bounds)."""
    if tuple(from_hw) == tuple(to_hw):
        return list(signs)
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = []
    for s in signs:
        x0, y0 = int(s.x * sx), int(s.y * sy)
        x1 = max(x0, min(to_hw[1], round((s.x + s.width) * sx)) - 1)
        y1 = max(y0, min(to_hw[0], round((s.y + s.height) * sy)) - 1)
        w, h = x1 - x0 + 1, y1 - y0 + 1
        out.append(SignDetection(x0, y0, w, h, w * h, s.leaf_id, s.class_name, s.score))
    return out


def decode_signs(msg: Any) -> list[SignDetection]:
    """The signs of a deserialized ``Detection2DArray`` (either flavour), as the node or the truth wrote them.

    Boxes come back in integer pixels (the node's centre = left + width / 2); the class is the first
    hypothesis' ``class_id`` and score (empty name, score 0 without one).
    """
    out = []
    for det in msg.detections:
        w, h = round(float(det.bbox.size_x)), round(float(det.bbox.size_y))
        x = round(float(det.bbox.center.position.x) - float(det.bbox.size_x) / 2.0)
        y = round(float(det.bbox.center.position.y) - float(det.bbox.size_y) / 2.0)
        name, score = "", 0.0
        if len(det.results):
            name, score = str(det.results[0].hypothesis.class_id), float(det.results[0].hypothesis.score)
        out.append(SignDetection(x, y, max(1, w), max(1, h), max(1, w) * max(1, h), UNKNOWN_LEAF, name, score))
    return out
