"""The result of a bag evaluation, typed: what ``metrics.json`` holds and how it is read back.

:class:`BagResult` is written as ``metrics.json`` (keys and their order are the file format: the
main job, reports and people read it) and loaded with :meth:`BagResult.load`. Both modes share
the head (completeness, bag, frame counts, latency); an offline run adds the engine
(:class:`OfflineDetails`), a live run the rates and the node process (:class:`LiveDetails`).
``evaluation`` stays the :class:`training.evaluation.evaluate.EvaluationReport` JSON as it is;
:meth:`BagResult.classifier_scores` / :meth:`BagResult.dataset_scores` read its headline numbers.
``sign_topic`` / ``signs`` (the last keys; None in files written before them) are the sign
ground-truth topic and the :class:`training.evaluation.bags.sign_scores.SignScoring` JSON of the
node's ``~/traffic_signs`` against it; :meth:`BagResult.sign_scores` reads its headline numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hiseg_ros.atomic import atomic_write_bytes

LIVE_LATENCY = "latency stamp->all outputs"
OFFLINE_LATENCY = "inference time"


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of per-frame latencies in ms (all None without frames)."""

    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencyStats:
        vals = np.asarray(values, dtype=np.float64)
        if not vals.size:
            return cls(0)
        p50, p95, p99 = (float(v) for v in np.percentile(vals, [50, 95, 99]))
        return cls(int(vals.size), p50, p95, p99, float(vals.mean()), float(vals.max()))

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("count", "p50", "p95", "p99", "mean", "max")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyStats:
        return cls(**{k: data[k] for k in ("count", "p50", "p95", "p99", "mean", "max")})


@dataclass(frozen=True)
class FrameCounts:
    """Frames of the bag and what became of them (see training.evaluation.bags.evaluate)."""

    in_bag: int
    processed: int  # offline: inferred; live: published
    with_outputs: int
    dropped: int
    partial: int
    with_gt: int
    without_gt: int
    late_outputs: int

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrameCounts:
        return cls(**{name: int(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class OfflineDetails:
    """What only an offline run reports: the engine that ran."""

    engine: str
    engine_choice: str  # why create_engine chose it


@dataclass(frozen=True)
class NodeDetails:
    """The node process of a live run."""

    command: list[str] | None
    exit_code: int | None
    log: str
    # the node's own counters (FrameStats) from its last /diagnostics: they include the warm-up
    # frames, up to diagnostics_period old; frames_dropped = overwritten by a newer frame in the node
    last_diagnostics: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "log": self.log,
            "last_diagnostics": self.last_diagnostics,
        }


@dataclass(frozen=True)
class LiveDetails:
    """What only a live run reports: input rates, the node, the first-output latency."""

    input_rate_hz: float | None  # achieved
    rate_scale: float
    target_rate_hz: float | None
    node: NodeDetails
    first_output_latency_ms: LatencyStats


@dataclass(frozen=True)
class ViewScore:
    """Headline numbers of one label space of the evaluation (a classifier or a dataset)."""

    miou: float | None
    num_samples: int


@dataclass(frozen=True)
class SignScore:
    """Headline sign numbers of one size subset (see training.evaluation.bags.sign_scores)."""

    truth: int
    detections: int
    precision: float | None
    recall: float | None
    class_accuracy: float | None


@dataclass(frozen=True)
class BagResult:
    """One bag evaluation (``metrics.json``); exactly one of ``offline`` / ``live`` is set, by ``mode``."""

    complete: bool
    reason: str | None
    mode: str
    bag: str
    model: str
    dataset: str
    camera_topic: str
    label_topic: str | None
    frames: FrameCounts
    latency_kind: str
    latency_ms: LatencyStats
    fps: float | None
    wall_seconds: float
    recorded_rate_hz: float | None
    output_bag: str | None  # folder name in the result folder, None without output bag
    output_topics: list[str]
    evaluation: dict[str, Any] | None  # EvaluationReport.to_dict(), None without ground truth
    classifier_view: str
    notes: list[str]
    samples: list[str]  # sample overlay PNGs, relative to the result folder
    offline: OfflineDetails | None = None
    live: LiveDetails | None = None
    sign_topic: str | None = None  # the sign ground-truth topic, None when the bag has none
    signs: dict[str, Any] | None = None  # SignScoring.to_json(), None without sign ground truth

    def __post_init__(self) -> None:
        if (self.mode == "live") != (self.live is not None) or (self.mode == "offline") != (self.offline is not None):
            raise ValueError(f"bag result of mode {self.mode!r} needs exactly its own details (offline / live)")

    # ------------------------------------------------------------------ metrics.json
    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` object, keys in the file's order."""
        out: dict[str, Any] = {
            "complete": self.complete,
            "reason": self.reason,
            "mode": self.mode,
            "bag": self.bag,
            "model": self.model,
            "dataset": self.dataset,
            "camera_topic": self.camera_topic,
            "label_topic": self.label_topic,
            "frames": self.frames.to_json(),
            "latency_kind": self.latency_kind,
            "latency_ms": self.latency_ms.to_json(),
            "fps": self.fps,
        }
        if self.offline is not None:
            out["wall_seconds"] = self.wall_seconds
            out["engine"] = self.offline.engine
            out["engine_choice"] = self.offline.engine_choice
            out["recorded_rate_hz"] = self.recorded_rate_hz
        if self.live is not None:
            out["input_rate_hz"] = self.live.input_rate_hz
            out["recorded_rate_hz"] = self.recorded_rate_hz
            out["rate_scale"] = self.live.rate_scale
            out["target_rate_hz"] = self.live.target_rate_hz
            out["wall_seconds"] = self.wall_seconds
        out["output_bag"] = self.output_bag
        out["output_topics"] = list(self.output_topics)
        if self.live is not None:
            out["node"] = self.live.node.to_json()
        out["evaluation"] = self.evaluation
        out["classifier_view"] = self.classifier_view
        out["notes"] = list(self.notes)
        out["samples"] = list(self.samples)
        if self.live is not None:
            out["first_output_latency_ms"] = self.live.first_output_latency_ms.to_json()
        out["sign_topic"] = self.sign_topic
        out["signs"] = self.signs
        return out

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write ``metrics.json`` atomically (hiseg_ros.atomic)."""
        return atomic_write_bytes(path, self.to_text().encode())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BagResult:
        """From a ``metrics.json`` object; ``KeyError`` names a missing key."""
        mode = data["mode"]
        offline = live = None
        if mode == "offline":
            offline = OfflineDetails(data["engine"], data["engine_choice"])
        elif mode == "live":
            node = data["node"]
            live = LiveDetails(
                input_rate_hz=data["input_rate_hz"],
                rate_scale=data["rate_scale"],
                target_rate_hz=data["target_rate_hz"],
                node=NodeDetails(node["command"], node["exit_code"], node["log"], node["last_diagnostics"]),
                first_output_latency_ms=LatencyStats.from_json(data["first_output_latency_ms"]),
            )
        else:
            raise ValueError(f"mode: {mode!r} is neither offline nor live")
        return cls(
            complete=bool(data["complete"]),
            reason=data["reason"],
            mode=mode,
            bag=data["bag"],
            model=data["model"],
            dataset=data["dataset"],
            camera_topic=data["camera_topic"],
            label_topic=data["label_topic"],
            frames=FrameCounts.from_json(data["frames"]),
            latency_kind=data["latency_kind"],
            latency_ms=LatencyStats.from_json(data["latency_ms"]),
            fps=data["fps"],
            wall_seconds=data["wall_seconds"],
            recorded_rate_hz=data["recorded_rate_hz"],
            output_bag=data["output_bag"],
            output_topics=list(data["output_topics"]),
            evaluation=data["evaluation"],
            classifier_view=data["classifier_view"],
            notes=list(data["notes"]),
            samples=list(data["samples"]),
            offline=offline,
            live=live,
            sign_topic=data.get("sign_topic"),  # absent from files written before the sign scores
            signs=data.get("signs"),
        )

    @classmethod
    def load(cls, path: str | Path) -> BagResult:
        """Read a ``metrics.json``; ``ValueError`` naming the file (and the key) when it is not one."""
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except KeyError as exc:
            raise ValueError(f"{path}: not a bag evaluation result (no key {exc.args[0]!r})") from exc
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a bag evaluation result ({exc})") from exc

    # ------------------------------------------------------------------ headline numbers
    def classifier_scores(self) -> dict[str, ViewScore]:
        """Per classifier: mIoU and frames (empty without ground truth)."""
        return self._scores("classifiers")

    def dataset_scores(self) -> dict[str, ViewScore]:
        """Per dataset (its evaluation classes): mIoU and frames (empty without ground truth)."""
        return self._scores("datasets")

    def sign_scores(self) -> dict[str, SignScore]:
        """Per size subset (``all``, ``at_least_24px``): the overall sign scores (empty without them)."""
        if self.signs is None:
            return {}
        out = {}
        for subset, scores in self.signs.items():
            if isinstance(scores, dict) and "overall" in scores:
                o = scores["overall"]
                out[subset] = SignScore(o["truth"], o["detections"], o["precision"], o["recall"], o["class_accuracy"])
        return out

    def _scores(self, view: str) -> dict[str, ViewScore]:
        if self.evaluation is None:
            return {}
        return {name: ViewScore(res["miou"], int(res["num_samples"])) for name, res in self.evaluation[view].items()}
