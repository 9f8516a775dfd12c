"""The report of ``python -m training.evaluation.signs``: one JSON-ready dict of every score, and the
printed lines made from that same dict, so nothing is computed without being printed.

Fractions are kept as fractions (JSON; ``null`` where undefined) and printed as percentages with
:func:`training.evaluation.metrics.pct`. Per-class IoUs are keyed by GTSDB class id and list only
the classes whose IoU is defined (present in the truth or the predictions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from training.evaluation.metrics import ConfusionMatrix, pct
from training.evaluation.sign_instances import BOX_IOU, CRITERIA, MIN_SIDE, SUBSETS, DetectionCounts

if TYPE_CHECKING:
    from training.evaluation.signs import ModeResult, SignEvaluation

__all__ = ["build_report", "format_report"]

_NO_LOGITS = "needs the logits: give the training checkpoint (an exported model outputs decisions only)"
_CRITERION_TEXT = {"class": "right class", "location": "location only"}
_SUBSET_TEXT = {SUBSETS[0]: "all signs", SUBSETS[1]: f"signs >= {MIN_SIDE} px"}


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _shares(classes: Sequence[str], counts: np.ndarray) -> dict[str, float]:
    """Share of each decided class, largest first (classes never decided left out)."""
    total = max(int(counts.sum()), 1)
    decided = sorted((k for k in np.flatnonzero(counts) if k < len(classes)), key=lambda k: (-counts[k], k))
    return {classes[k]: float(counts[k]) / total for k in decided}


def _per_class(cm: ConfusionMatrix, num_classes: int) -> dict[str, float]:
    iou = cm.scores().iou[:num_classes]
    return {str(k): float(iou[k]) for k in range(num_classes) if not math.isnan(iou[k])}


def _image_wide(cm: ConfusionMatrix) -> dict[str, Any]:
    """The sign classes of the image-wide matrix (its last class, "no sign", is not a sign class)."""
    n = cm.num_classes - 1
    iou = _per_class(cm, n)
    return {"miou": sum(iou.values()) / len(iou) if iou else None, "iou": iou}


def _counts(c: DetectionCounts) -> dict[str, Any]:
    return {
        "precision": _number(c.precision),
        "recall": _number(c.recall),
        "true_positives": c.true_positives,
        "false_positives": c.false_positives,
        "false_negatives": c.false_negatives,
    }


def _mode(result: ModeResult, root_classes: Sequence[str]) -> dict[str, Any]:
    on_sign = result.on_sign_pixels.scores()
    given = None
    if result.given_location is not None:
        g = result.given_location.scores()
        given = {
            "miou": _number(g.miou),
            "pixel_accuracy": _number(g.pixel_accuracy),
            "iou": _per_class(result.given_location, result.given_location.num_classes),
        }
    return {
        "end_to_end": _image_wide(result.image_wide),
        "end_to_end_on_sign_pixels": {"miou": _number(on_sign.miou), "pixel_accuracy": _number(on_sign.pixel_accuracy)},
        "given_location": given,
        "detection": {c: {s: _counts(result.detection.counts[c, s]) for s in SUBSETS} for c in CRITERIA},
        "root_on_true_sign_pixels": _shares(root_classes, result.root_counts),
    }


def build_report(
    evaluation: SignEvaluation,
    root_classes: Sequence[str],
    cityscapes_root_counts: np.ndarray,
    header: Mapping[str, Any],
) -> dict[str, Any]:
    """Every score of ``evaluation`` (and the root's decisions on Cityscapes signs) as plain data;
    ``header`` (model, engine, data, ...) goes first."""
    e = evaluation
    both = e.pixels > 0
    return {
        **header,
        "test_scale": e.test_scale,
        "images": e.images,
        "sign_instances": {
            "signs": e.sign_source,
            "min_sign_area": e.min_sign_area,
            "sign_split": e.sign_split,
            "box_iou": BOX_IOU,
            "min_side": MIN_SIDE,
            "size": "longer side of the box",
        },
        "modes": {m: None if r is None else _mode(r, root_classes) for m, r in e.modes.items()},
        "modes_differ": {
            "pixels": e.differing_pixels / e.pixels if both else None,
            "true_sign_pixels": e.differing_sign_pixels / e.sign_pixels if both and e.sign_pixels else None,
        },
        "root_on_cityscapes_val_signs": _shares(root_classes, cityscapes_root_counts),
    }


def _pct(value: float | None) -> str:
    return pct(value, 1, unit=" %")


def _iou_list(iou: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {pct(v, 1)}" for k, v in iou.items()) or "-"


def _share_list(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_pct(v)}" for k, v in shares.items()) or "no sign pixels"


def _mode_lines(tag: str, m: Mapping[str, Any]) -> list[str]:
    e2e, on_sign, given = m["end_to_end"], m["end_to_end_on_sign_pixels"], m["given_location"]
    lines = [
        f"{tag} end to end, image-wide: mIoU {_pct(e2e['miou'])} over {len(e2e['iou'])} classes; "
        f"IoU % per GTSDB class: {_iou_list(e2e['iou'])}",
        f"{tag} end to end on true sign pixels: mIoU {_pct(on_sign['miou'])}, "
        f"pixel accuracy {_pct(on_sign['pixel_accuracy'])}",
    ]
    if given is None:
        lines.append(f"{tag} sign classes given the location: not available ({_NO_LOGITS})")
    else:
        lines.append(
            f"{tag} sign classes given the location: mIoU {_pct(given['miou'])}, "
            f"pixel accuracy {_pct(given['pixel_accuracy'])}; IoU % per GTSDB class: {_iou_list(given['iou'])}"
        )
    for criterion, subsets in m["detection"].items():
        for subset, c in subsets.items():
            tp, fp, fn = c["true_positives"], c["false_positives"], c["false_negatives"]
            lines.append(
                f"{tag} detection, {_CRITERION_TEXT[criterion]}, {_SUBSET_TEXT[subset]}: "
                f"precision {_pct(c['precision'])} ({tp} of {tp + fp} detections), "
                f"recall {_pct(c['recall'])} ({tp} of {tp + fn} signs)"
            )
    lines.append(f"{tag} root on true sign pixels (gtsdb_test): {_share_list(m['root_on_true_sign_pixels'])}")
    return lines


def format_report(report: Mapping[str, Any]) -> list[str]:
    """The printed lines: every score of :func:`build_report`'s dict, one topic per line."""
    scale = report["test_scale"]
    default = "the default" if scale == report.get("default_test_scale") else f"default {report['default_test_scale']}"
    s = report["sign_instances"]
    lines = [
        f"model {report['model']}: {report['engine']}, hierarchy {report['hierarchy']}",
        f"{report['images']} GTSDB test scenes of {report['data']} (limit {report['limit']}), "
        f"test scale {scale} ({default}; 1.0 = native size, the node's resize.policy none)",
        f"sign instances: the node's find_signs over {s['signs']}, min_sign_area {s['min_sign_area']} px, "
        f"split by {s['sign_split']}; "
        f"found = box IoU >= {s['box_iou']}; sizes by the {s['size']} (>= {s['min_side']} px)",
    ]
    for mode, scores in report["modes"].items():
        if scores is None:
            lines.append(f"[{mode}] not available ({_NO_LOGITS})")
        else:
            lines += _mode_lines(f"[{mode}]", scores)
    differ = report["modes_differ"]
    if differ["pixels"] is not None:
        lines.append(
            f"decision modes differ on {_pct(differ['pixels'])} of the pixels, "
            f"{_pct(differ['true_sign_pixels'])} of the true sign pixels"
        )
    lines.append(
        f"root on true sign pixels (cityscapes_val, deployed): {_share_list(report['root_on_cityscapes_val_signs'])}"
    )
    return lines
