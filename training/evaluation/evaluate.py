"""Evaluation of any predictor of the hierarchy over per-pixel datasets, and its report.

Two views are measured, because they answer different questions:

(a) *per classifier*: each classifier's decisions against its hierarchical targets
    (:meth:`Hierarchy.targets`, IGNORE excluded), pooled over all datasets. This says how good
    e.g. the rider sub-classifier is on rider pixels, whatever the root decided there.
(b) *per dataset*: the flattened leaf map (:meth:`Hierarchy.flatten`, the decision rule that the
    node runs) mapped into the dataset's own evaluation classes, so numbers compare with the
    dataset's official benchmark. A leaf without counterpart in the dataset is a prediction of
    "no class" (a false negative, see :mod:`training.evaluation.metrics`). On Cityscapes the result is
    identical to ``cityscapesscripts`` on the PNGs written by :class:`CityscapesPredictionWriter`.

A predictor is anything callable as ``predictor(rgb_image) -> {classifier: decisions}``: the
training model, ONNX Runtime and TensorRT engines all provide that, so one evaluation serves all.
The command line evaluates a model file through the runtime engines (:func:`engine_predictor`),
exactly as the vehicle runs it: ``python -m training.evaluation.evaluate --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from tqdm import tqdm

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.engines import BACKENDS, PRECISIONS, create_engine
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training.data.readers import load_dataset
from training.data.readers.base import Sample
from training.evaluation.metrics import ConfusionMatrix, Scores, class_table, confusion_png, pct

CONVENTIONS = {
    "iou": "TP / (TP + FP + FN); undefined (null) when the class is neither in the ground truth nor predicted",
    "acc": "per-class accuracy (recall) TP / gt pixels; undefined (null) without gt pixels",
    "miou": "mean over the defined IoUs (as cityscapesscripts)",
    "macc": "mean over the classes present in the ground truth",
    "pixel_accuracy": "sum TP / counted pixels",
    "void": "predictions without counterpart in the label space count as false negatives",
    "classifiers": "decisions vs. hierarchical targets, IGNORE pixels excluded, pooled over datasets",
    "datasets": "flattened leaf map mapped to the dataset's evaluation classes",
    "confusion": "rows: gt classes; columns: predicted classes, then one 'no class' column",
}


class Predictor(Protocol):
    """``(H x W x 3 uint8 RGB) -> {classifier name: H x W integer decisions}`` for every classifier."""

    def __call__(self, image: np.ndarray) -> Mapping[str, np.ndarray]: ...


class SampleSource(Protocol):
    """What :func:`evaluate` needs of a dataset reader (every ``training.data.readers`` reader fits)."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


PredictionSink = Callable[[Sample, np.ndarray], None]
"""Called with every sample and its flattened leaf map (e.g. :class:`CityscapesPredictionWriter`)."""


# ---------------------------------------------------------------------- results
@dataclass
class LabelSpaceResult:
    """Confusion matrix of one label space (a classifier, or a dataset's evaluation classes)."""

    name: str
    class_names: tuple[str, ...]
    confusion: ConfusionMatrix
    num_samples: int = 0

    @property
    def scores(self) -> Scores:
        return self.confusion.scores()

    def to_dict(self) -> dict:
        return {
            "num_samples": self.num_samples,
            **self.scores.to_dict(self.class_names),
            "confusion": self.confusion.matrix.tolist(),
        }


@dataclass
class EvaluationReport:
    """Per-classifier and per-dataset results of one evaluation run."""

    hierarchy: str
    classifiers: dict[str, LabelSpaceResult]
    datasets: dict[str, LabelSpaceResult]
    samples: dict[str, int] = field(default_factory=dict)
    predictor_seconds: float = 0.0

    @property
    def num_samples(self) -> int:
        return sum(self.samples.values())

    def to_dict(self) -> dict:
        per_image = self.predictor_seconds / self.num_samples if self.num_samples else None
        return {
            "hierarchy": self.hierarchy,
            "conventions": CONVENTIONS,
            "samples": dict(self.samples),
            "predictor_seconds_per_image": per_image,
            "classifiers": {k: v.to_dict() for k, v in self.classifiers.items()},
            "datasets": {k: v.to_dict() for k, v in self.datasets.items()},
        }

    def summary_markdown(self) -> str:
        """The two summary tables (per dataset, per classifier)."""
        lines = [
            "| dataset | samples | mIoU % | mAcc % | pixel acc % | no-class predictions |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, res in self.datasets.items():
            s = res.scores
            lines.append(
                f"| {name} | {res.num_samples} | {pct(s.miou)} | {pct(s.macc)} | {pct(s.pixel_accuracy)} "
                f"| {s.void_pixels} |"
            )
        lines += ["", "| classifier | classes | mIoU % | mAcc % | pixel acc % |", "|---|---:|---:|---:|---:|"]
        for name, res in self.classifiers.items():
            s = res.scores
            lines.append(
                f"| {name} | {len(res.class_names)} | {pct(s.miou)} | {pct(s.macc)} | {pct(s.pixel_accuracy)} |"
            )
        return "\n".join(lines) + "\n"

    def to_markdown(self, images: Mapping[str, str] | None = None) -> str:
        """Full report; ``images`` maps ``dataset/<name>`` / ``classifier/<name>`` to PNG file names."""
        images = images or {}
        counts = ", ".join(f"{k} {v}" for k, v in self.samples.items()) or "none"
        parts = [
            f"# Evaluation of hierarchy `{self.hierarchy}`",
            "",
            f"Samples: {counts}.",
        ]
        if self.num_samples:
            parts.append(f"Predictor time: {1000.0 * self.predictor_seconds / self.num_samples:.1f} ms per image.")
        parts += [
            "",
            "Per dataset: the flattened leaf map in the dataset's evaluation classes (comparable with the "
            "dataset's benchmark; predictions without counterpart count as false negatives). Per classifier: "
            "decisions against the hierarchical targets, ignored pixels excluded, pooled over datasets. "
            "mIoU is the mean over classes present in the ground truth or predicted (as cityscapesscripts), "
            "mAcc over classes present in the ground truth; '-' marks an undefined score.",
            "",
            "## Summary",
            "",
            self.summary_markdown(),
        ]
        for kind, results in (("dataset", self.datasets), ("classifier", self.classifiers)):
            for name, res in results.items():
                parts += [f"## {kind.capitalize()} `{name}`", ""]
                if f"{kind}/{name}" in images:
                    parts += [f"![confusion matrix of {name}]({images[f'{kind}/{name}']})", ""]
                parts.append(class_table(res.scores, res.class_names, markdown=True))
        return "\n".join(parts)

    def write(self, out_dir: Path | str, plots: bool = True) -> list[Path]:
        """Write metrics.json, report.md and (optionally) confusion PNGs, each file atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        images: dict[str, str] = {}
        if plots:
            for kind, results in (("dataset", self.datasets), ("classifier", self.classifiers)):
                for name, res in results.items():
                    png = out / f"confusion_{kind}_{name}.png"
                    title = f"{kind} {name}: row-normalised confusion (%)"
                    atomic_write_bytes(png, confusion_png(res.confusion, res.class_names, title))
                    images[f"{kind}/{name}"] = png.name
                    written.append(png)
        metrics = out / "metrics.json"
        atomic_write_bytes(metrics, (json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n").encode())
        report = out / "report.md"
        atomic_write_bytes(report, self.to_markdown(images).encode())
        return [metrics, report, *written]


# ---------------------------------------------------------------------- accumulation
class Evaluator:
    """Accumulates both views sample by sample; usable from a training loop that has decisions.

    Workers may each run one and merge them with ``+=``; the integer confusion matrices make the
    merged result identical to a single pass.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.classifiers = {
            clf.name: LabelSpaceResult(clf.name, clf.classes, ConfusionMatrix(clf.num_classes))
            for clf in hierarchy.classifiers
        }
        self.datasets: dict[str, LabelSpaceResult] = {}
        self.samples: dict[str, int] = {}
        self.predictor_seconds = 0.0
        self._luts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def check_dataset(self, dataset: str) -> None:
        """Fail before any prediction if ``dataset`` cannot be evaluated per pixel."""
        mapping = self.hierarchy.dataset(dataset)
        if mapping.supervision != "pixel":
            raise ValueError(
                f"dataset {dataset!r} has {mapping.supervision!r} supervision: only per-pixel datasets can be evaluated"
            )

    def _dataset_result(self, dataset: str) -> LabelSpaceResult | None:
        evaluation = self.hierarchy.dataset(dataset).evaluation
        if evaluation is None:
            return None
        if dataset not in self.datasets:
            names = tuple(name for _, name in evaluation.classes)
            self.datasets[dataset] = LabelSpaceResult(dataset, names, ConfusionMatrix(len(names)))
            self._luts[dataset] = (
                self.hierarchy.leaf_to_eval_lut(dataset),
                self.hierarchy.native_to_eval_lut(dataset),
            )
        return self.datasets[dataset]

    def add(self, dataset: str, label: np.ndarray, decisions: Mapping[str, np.ndarray]) -> np.ndarray:
        """Count one labelled image; returns the flattened leaf map of ``decisions``."""
        self.check_dataset(dataset)
        label = np.asarray(label)
        check_decisions(self.hierarchy, decisions, label.shape)
        targets = self.hierarchy.targets(dataset, label)  # validates the native ids first
        for name, res in self.classifiers.items():
            res.confusion.update(targets[name], decisions[name])
            res.num_samples += 1
        leaf_map = self.hierarchy.flatten(decisions)
        res = self._dataset_result(dataset)
        if res is not None:
            leaf_to_eval, native_to_eval = self._luts[dataset]
            res.confusion.update(native_to_eval[label], leaf_to_eval[leaf_map])
            res.num_samples += 1
        self.samples[dataset] = self.samples.get(dataset, 0) + 1
        return leaf_map

    def __iadd__(self, other: Evaluator) -> Evaluator:
        for name, res in other.classifiers.items():
            self.classifiers[name].confusion += res.confusion
            self.classifiers[name].num_samples += res.num_samples
        for name, res in other.datasets.items():
            mine = self._dataset_result(name)
            if mine is None:  # same hierarchy on both sides, so this is a programming error
                raise ValueError(f"cannot merge results of dataset {name!r}: it has no evaluation classes here")
            mine.confusion += res.confusion
            mine.num_samples += res.num_samples
        for name, n in other.samples.items():
            self.samples[name] = self.samples.get(name, 0) + n
        self.predictor_seconds += other.predictor_seconds
        return self

    def report(self) -> EvaluationReport:
        return EvaluationReport(
            self.hierarchy.name, dict(self.classifiers), dict(self.datasets), dict(self.samples), self.predictor_seconds
        )


def check_decisions(hierarchy: Hierarchy, decisions: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> None:
    """A predictor must give every classifier integer decisions of the label's shape, in range."""
    for clf in hierarchy.classifiers:
        if clf.name not in decisions:
            raise ValueError(f"predictor gave no decisions for classifier {clf.name!r} (got {sorted(decisions)})")
        dec = np.asarray(decisions[clf.name])
        if dec.shape != shape:
            raise ValueError(f"decisions of {clf.name!r} have shape {dec.shape}, the label map {shape}")
        if not np.issubdtype(dec.dtype, np.integer):
            raise ValueError(f"decisions of {clf.name!r} must be integers, got {dec.dtype}")
        if dec.size and (int(dec.min()) < 0 or int(dec.max()) >= clf.num_classes):
            raise ValueError(
                f"decisions of {clf.name!r} lie in [{int(dec.min())}, {int(dec.max())}], "
                f"expected 0..{clf.num_classes - 1}"
            )


def evaluate(
    hierarchy: Hierarchy,
    predictor: Predictor,
    datasets: Sequence[SampleSource],
    out_dir: Path | str | None = None,
    *,
    sinks: Sequence[PredictionSink] = (),
    limit: int | None = None,
    progress: bool = True,
    plots: bool = True,
) -> EvaluationReport:
    """Run ``predictor`` over every sample of ``datasets`` (first ``limit`` of each if given).

    Writes the report into ``out_dir`` when given, and passes every flattened leaf map to
    ``sinks`` (e.g. a :class:`CityscapesPredictionWriter` for the official tool).
    """
    evaluator = Evaluator(hierarchy)
    for reader in datasets:
        evaluator.check_dataset(reader.name)
    counts = [len(r) if limit is None else min(len(r), limit) for r in datasets]
    with tqdm(total=sum(counts), desc="evaluate", unit="img", disable=not progress) as bar:
        for reader, count in zip(datasets, counts, strict=True):
            bar.set_postfix_str(reader.name)
            for i in range(count):
                sample = reader[i]
                if sample.label is None:
                    raise ValueError(f"{reader.name} sample {sample.sample_id!r} has no per-pixel label map")
                start = time.perf_counter()
                decisions = predictor(sample.image)
                evaluator.predictor_seconds += time.perf_counter() - start
                leaf_map = evaluator.add(reader.name, sample.label, decisions)
                for sink in sinks:
                    sink(sample, leaf_map)
                bar.update()
    report = evaluator.report()
    if out_dir is not None:
        report.write(out_dir, plots=plots)
    return report


# ---------------------------------------------------------------------- Cityscapes export
def cityscapes_label_lut(hierarchy: Hierarchy, dataset: str = "cityscapes") -> np.ndarray:
    """LUT leaf id (and void) -> Cityscapes labelId; leaves without counterpart -> 0 (unlabeled)."""
    leaf_native = hierarchy.leaf_to_native(dataset)
    lut = np.zeros(max(hierarchy.max_leaf_id, hierarchy.void_value) + 1, dtype=np.uint8)
    for leaf in hierarchy.leaves:
        native = leaf_native[leaf.name]
        if native is not None and 0 <= native <= 255:
            lut[leaf.id] = native
    return lut


class CityscapesPredictionWriter:
    """Prediction sink writing ``{out}/{city}/{city}_{seq}_{frame}_pred_labelIds.png`` for Cityscapes samples.

    labelId PNGs are what ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` reads
    (it finds ``{city}_{seq}_{frame}*.png`` anywhere under ``CITYSCAPES_RESULTS``); samples of other
    datasets are skipped so one writer can sit in a multi-dataset run.
    """

    def __init__(self, hierarchy: Hierarchy, out_dir: Path | str, dataset: str = "cityscapes") -> None:
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.lut = cityscapes_label_lut(hierarchy, dataset)

    def path_for(self, sample_id: str) -> Path:
        city = sample_id.rsplit("_", 2)[0]
        return self.out_dir / city / f"{sample_id}_pred_labelIds.png"

    def __call__(self, sample: Sample, leaf_map: np.ndarray) -> None:
        if sample.dataset != self.dataset:
            return
        path = self.path_for(sample.sample_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", self.lut[leaf_map])
        if not ok:
            raise RuntimeError(f"cannot encode prediction PNG for {sample.sample_id}")
        atomic_write_bytes(path, png.tobytes())


# ---------------------------------------------------------------------- command line
def engine_predictor(
    hierarchy: Hierarchy, model: str | Path, backend: str = "auto", precision: str = "fp32"
) -> Predictor:
    """The decisions of a runtime engine on ``model``, refused unless the model embeds ``hierarchy``.

    The hierarchy is what the targets and evaluation classes come from; a model trained on another
    one would be scored against the wrong labels without any error.
    """
    engine, _ = create_engine(model, backend=backend, precision=precision)
    if engine.hierarchy != hierarchy:
        raise ValueError(
            f"{model}: the model's hierarchy {engine.hierarchy.name!r} differs from the evaluated "
            f"hierarchy {hierarchy.name!r}"
        )
    return lambda image: engine.infer(image).per_classifier


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluation.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--hierarchy", required=True, type=Path, help="hierarchy YAML")
    parser.add_argument(
        "--dataset",
        action="append",
        nargs="+",
        required=True,
        metavar="NAME ROOT [SPLIT]",
        help="a per-pixel dataset to evaluate (repeatable), e.g. cityscapes /data/cityscapes val",
    )
    parser.add_argument("--model", required=True, type=Path, help="model file: ONNX, or a training checkpoint (.pt)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference engine (auto: TensorRT where it runs, else ONNX Runtime; PyTorch for a checkpoint)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="TensorRT precision")
    parser.add_argument("--out", required=True, type=Path, help="report folder")
    parser.add_argument("--cityscapes-results", type=Path, help="also write Cityscapes labelId PNGs here")
    parser.add_argument("--limit", type=int, help="evaluate at most this many samples per dataset")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-plots", action="store_true", help="skip the confusion-matrix PNGs")
    args = parser.parse_args(argv)
    for spec in args.dataset:
        if not 2 <= len(spec) <= 3:
            parser.error(f"--dataset expects NAME ROOT [SPLIT], got {' '.join(spec)!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    hierarchy = load_hierarchy(args.hierarchy)
    readers = []
    for name, root, *split in args.dataset:
        readers.append(load_dataset(name, root, **({"split": split[0]} if split else {})))
    predictor = engine_predictor(hierarchy, args.model, args.backend, args.precision)
    sinks = [CityscapesPredictionWriter(hierarchy, args.cityscapes_results)] if args.cityscapes_results else []
    report = evaluate(
        hierarchy,
        predictor,
        readers,
        args.out,
        sinks=sinks,
        limit=args.limit,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    print(report.summary_markdown())
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
