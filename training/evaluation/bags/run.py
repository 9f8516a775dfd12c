"""What the offline and live runs share: a run's counters, its segmentation and sign metrics, the
sample overlays (with the legend of the classes they show) and sign figures, and the
:class:`~training.evaluation.bags.result.BagResult` it finishes with.
"""

from __future__ import annotations

import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from hiseg_ros.outputs import SignDetection
from training.evaluation.evaluate import EvaluationReport, Evaluator, LabelSpaceResult
from training.evaluation.metrics import ConfusionMatrix

from .report import SampleFigure, write_report
from .result import LIVE_LATENCY, OFFLINE_LATENCY, BagResult, FrameCounts, LatencyStats, LiveDetails, OfflineDetails
from .sign_scores import SignScoring

SIGN_FIGURES = 3  # frames with detected signs shown with their boxes and the true ones
TRUTH_COLOR = (255, 255, 255)


def legend(hierarchy: Hierarchy, leaf: np.ndarray) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """(name, colour) of the leaves present in a leaf map, most pixels first: an overlay's colour key."""
    counts = np.bincount(leaf.ravel().astype(np.int64), minlength=hierarchy.max_leaf_id + 1)
    present = [n for n in hierarchy.leaves if n.id < len(counts) and counts[n.id]]
    present.sort(key=lambda n: (-int(counts[n.id]), n.name))
    return tuple((n.name, tuple(int(c) for c in hierarchy.palette[n.id])) for n in present)


def draw_truth(image: np.ndarray, truth: list[SignDetection]) -> np.ndarray:
    """``image`` with the true sign boxes drawn (white, thin) and their class names below them."""
    out = np.array(image, order="C", copy=True)
    h = out.shape[0]
    scale = max(0.3, min(1.0, h / 720.0))
    for sign in truth:
        x0, y0, x1, y1 = sign.x, sign.y, sign.x + sign.width - 1, sign.y + sign.height - 1
        cv2.rectangle(out, (x0, y0), (x1, y1), TRUTH_COLOR, 1)
        ty = min(h - 2, y1 + int(14 * scale) + 2)
        cv2.putText(out, f"gt {sign.class_name}", (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, TRUTH_COLOR, 1)
    return out


def _png(image: np.ndarray) -> bytes | None:
    if image.shape[0] < 256:  # tiny test images: enlarge (nearest) so the report shows something
        factor = -(-256 // image.shape[0])
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return png.tobytes() if ok else None


class SegmentationMetrics:
    """Segmentation metrics of the frames with ground truth, in either mode (see training.evaluation.bags.evaluate)."""

    def __init__(self, hierarchy: Hierarchy, dataset: str) -> None:
        self.hierarchy = hierarchy
        self.dataset = dataset
        self.evaluator = Evaluator(hierarchy)
        self.evaluator.check_dataset(dataset)
        self.live_classifiers: dict[str, LabelSpaceResult] | None = None

    def add_decisions(self, label: np.ndarray, per_classifier: Mapping[str, np.ndarray]) -> None:
        """Offline: the engine's raw decisions (exactly what training.evaluation.evaluate counts)."""
        self.evaluator.add(self.dataset, label, per_classifier)

    def add_node_masks(self, label: np.ndarray, masks: Mapping[str, np.ndarray], leaf: np.ndarray) -> bool:
        """Live: the node's per-classifier masks (255 = not routed there); True when they flatten to ``leaf``."""
        h = self.hierarchy
        filled = {name: np.where(m == IGNORE, 0, m).astype(np.uint8) for name, m in masks.items()}
        flat = self.evaluator.add(self.dataset, label, filled)  # per-dataset view: exact (path decisions only)
        if self.live_classifiers is None:
            self.live_classifiers = {
                c.name: LabelSpaceResult(c.name, c.classes, ConfusionMatrix(c.num_classes)) for c in h.classifiers
            }
        targets = h.targets(self.dataset, label)
        for name, res in self.live_classifiers.items():
            res.confusion.update(targets[name], masks[name])  # 255 -> the void ("no class") column
            res.num_samples += 1
        return bool(np.array_equal(flat, leaf))

    def report(self) -> EvaluationReport | None:
        rep = self.evaluator.report()
        if not rep.num_samples:
            return None
        if self.live_classifiers is not None:
            rep.classifiers = dict(self.live_classifiers)
        return rep


@dataclass
class RunState:
    """Counters of one run while it goes; :func:`finish` turns them into the result."""

    mode: str
    bag: Path
    model: Path
    dataset: str
    frames_in_bag: int
    camera_topic: str
    label_topic: str | None
    folder: Path  # the result folder being built (renamed into place when the run is over)
    sign_topic: str | None = None  # the bag's sign ground truth; its scores in ``signs``
    processed: int = 0  # offline: inferred; live: published
    with_outputs: int = 0
    dropped: int = 0
    partial: int = 0
    with_gt: int = 0
    without_gt: int = 0
    late_outputs: int = 0
    inconsistent_masks: int = 0
    latencies: array.array = field(default_factory=lambda: array.array("d"))  # 8 bytes a frame
    first_latencies: array.array = field(default_factory=lambda: array.array("d"))
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    samples: list[SampleFigure] = field(default_factory=list)
    sign_figures: list[SampleFigure] = field(default_factory=list)
    signs: SignScoring | None = None
    sign_rule: dict[str, Any] = field(default_factory=dict)  # SIGN_RULE values of the run's detections

    def fail(self, reason: str) -> None:
        """Record why the result is incomplete (the first reason wins)."""
        if self.reason is None:
            self.reason = reason

    def add_signs(self, truth: list[SignDetection] | None, detections: list[SignDetection]) -> None:
        """Score one frame's detections against its true signs (frames without sign truth are not scored)."""
        if truth is None:
            return
        if self.signs is None:
            self.signs = SignScoring(rule=self.sign_rule)
        self.signs.add(truth, detections)

    def save_sample(
        self,
        index: int,
        stamp: int,
        rgb: np.ndarray | None,
        overlay: np.ndarray,
        hierarchy: Hierarchy,
        leaf: np.ndarray,
    ) -> None:
        """Save ``input | overlay`` of frame ``index`` as a sample PNG of the report, with the legend of
        the classes ``leaf`` (the frame's leaf map) shows."""
        image = overlay if rgb is None or rgb.shape != overlay.shape else np.concatenate([rgb, overlay], axis=1)
        png = _png(image)
        if png is not None:
            name = f"samples/frame_{index:06d}.png"
            atomic_write_bytes(self.folder / name, png)
            what = "input (left), node overlay (right)" if self.mode == "live" else "input (left), overlay (right)"
            self.samples.append(SampleFigure(f"frame {index} (stamp {stamp}): {what}", name, legend(hierarchy, leaf)))

    def wants_sign_figure(self, detections: list[SignDetection]) -> bool:
        return bool(detections) and len(self.sign_figures) < SIGN_FIGURES

    def save_sign_figure(
        self, index: int, stamp: int, overlay: np.ndarray, truth: list[SignDetection] | None, detections: list
    ) -> None:
        """Save the overlay (detected boxes drawn and named, as the node draws them) with the true boxes."""
        png = _png(draw_truth(overlay, truth or []))
        if png is not None:
            name = f"samples/signs_{index:06d}.png"
            atomic_write_bytes(self.folder / name, png)
            caption = f"frame {index} (stamp {stamp}): detected signs (coloured, with score) and true signs (white)"
            names = tuple(d.class_name for d in detections)
            truth_names = tuple(t.class_name for t in truth or [])
            self.sign_figures.append(SampleFigure(caption, name, (), names, truth_names))


def sample_indices(count: int, n: int) -> set[int]:
    """``n`` frame indices spread evenly over ``count`` frames (the sample overlays)."""
    if count <= 0 or n <= 0:
        return set()
    return {round(float(v)) for v in np.linspace(0, count - 1, min(n, count))}


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled)


def finish(
    state: RunState,
    metrics: SegmentationMetrics | None,
    *,
    fps: float | None,
    wall_seconds: float,
    recorded_rate_hz: float | None,
    output_bag: str | None,
    output_topics: list[str],
    details: OfflineDetails | LiveDetails,
) -> BagResult:
    """The run's result: completeness verdict, metrics.json and the report, written into ``state.folder``."""
    missing = state.frames_in_bag - state.processed
    if state.reason is None and missing > 0:
        state.fail(f"only {state.processed} of {state.frames_in_bag} frames in the bag were processed")
    if state.reason is None and (state.dropped or state.partial):
        state.fail(
            f"{state.dropped} frame(s) got no output and {state.partial} only some outputs "
            f"(of {state.processed} published)"
        )
    evaluation = metrics.report() if metrics is not None else None
    live = state.mode == "live"
    if live and state.inconsistent_masks:
        state.notes.append(
            f"{state.inconsistent_masks} frame(s) whose classifier masks do not flatten to the node's ~/mask"
        )
    result = BagResult(
        complete=state.reason is None,
        reason=state.reason,
        mode=state.mode,
        bag=str(state.bag),
        model=str(state.model),
        dataset=state.dataset,
        camera_topic=state.camera_topic,
        label_topic=state.label_topic,
        frames=FrameCounts(
            in_bag=state.frames_in_bag,
            processed=state.processed,
            with_outputs=state.with_outputs,
            dropped=state.dropped,
            partial=state.partial,
            with_gt=state.with_gt,
            without_gt=state.without_gt,
            late_outputs=state.late_outputs,
        ),
        latency_kind=LIVE_LATENCY if live else OFFLINE_LATENCY,
        latency_ms=LatencyStats.of(state.latencies),
        fps=fps,
        wall_seconds=wall_seconds,
        recorded_rate_hz=recorded_rate_hz,
        output_bag=output_bag,
        output_topics=output_topics,
        evaluation=None if evaluation is None else evaluation.to_dict(),
        classifier_view=(
            "node masks; pixels not routed to the classifier count as 'no class' (false negative)"
            if live
            else "raw engine decisions (as training.evaluation.evaluate)"
        ),
        notes=state.notes,
        samples=[s.png for s in state.samples],
        offline=details if isinstance(details, OfflineDetails) else None,
        live=details if isinstance(details, LiveDetails) else None,
        sign_topic=state.sign_topic,
        signs=None if state.signs is None else state.signs.to_json(),
    )
    write_report(state.folder, result, evaluation, list(state.latencies), state.samples, state.sign_figures)
    result.write(state.folder / "metrics.json")
    return result
