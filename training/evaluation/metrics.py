"""Confusion matrices and the segmentation scores computed from them.

One :class:`ConfusionMatrix` per label space (a classifier of the hierarchy, or a dataset's
evaluation classes). Rows are ground-truth classes, columns predicted classes, plus one extra
*void* column: a prediction outside ``0..num_classes-1`` (e.g. 255 = "this leaf has no
counterpart in the dataset") is a prediction of no evaluated class. It is never a true
positive, so it is a false negative of the pixel's ground-truth class and a false positive of
nobody, which is exactly how the official Cityscapes evaluation treats predictions of labels
that are not evaluated (parking, unlabeled, ...). Ground-truth pixels equal to ``ignore_index``
are not counted at all.

Score conventions (identical to ``cityscapesscripts`` on Cityscapes, tested against it):

* IoU_c = TP / (TP + FP + FN); NaN when TP + FP + FN = 0.
* Acc_c (recall) = TP / (TP + FN) = TP / gt pixels of c; NaN when c has no gt pixels.
* mIoU = mean of the defined IoUs: a class absent from the ground truth AND never predicted is
  excluded; a class absent from the ground truth but predicted has IoU 0 and counts (the
  official tool does the same). On full validation sets every class is present and this is
  simply "mean over the classes present in the ground truth".
* mAcc = mean of the defined accuracies, i.e. over the classes present in the ground truth.
* pixel accuracy = sum TP / number of counted pixels (void predictions included).

Accumulation is one ``np.bincount`` per image; workers each fill their own matrix and the
results are merged with ``+`` (exact integer sums, so merging equals one pass over all data).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE = 255


@dataclass(eq=False)
class ConfusionMatrix:
    """Pixel counts ``matrix[gt, pred]`` of shape ``(n, n + 1)``; the last column is *void*."""

    num_classes: int
    ignore_index: int = IGNORE
    matrix: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"a confusion matrix needs at least one class, got {self.num_classes}")
        shape = (self.num_classes, self.num_classes + 1)
        if self.matrix is None:
            self.matrix = np.zeros(shape, dtype=np.int64)
        else:
            matrix = np.asarray(self.matrix)
            if matrix.shape != shape:
                raise ValueError(f"matrix of {self.num_classes} classes must have shape {shape}, got {matrix.shape}")
            self.matrix = matrix.astype(np.int64, copy=True)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> ConfusionMatrix:
        """Count one image (or any same-shaped pair of arrays); returns ``self`` for chaining.

        ``target`` holds class indices or ``ignore_index``; any other value is an error, since a
        wrong ground-truth mapping must not be silently dropped. ``prediction`` values outside
        ``0..n-1`` go to the void column.
        """
        target = np.asarray(target)
        prediction = np.asarray(prediction)
        if target.shape != prediction.shape:
            raise ValueError(f"target shape {target.shape} != prediction shape {prediction.shape}")
        t = target.ravel()
        p = prediction.ravel()
        valid = t != self.ignore_index
        t = t[valid].astype(np.int64)
        p = p[valid].astype(np.int64)
        n = self.num_classes
        if t.size and (int(t.min()) < 0 or int(t.max()) >= n):
            bad = np.unique(t[(t < 0) | (t >= n)]).tolist()
            raise ValueError(f"target values {bad[:10]} are neither classes 0..{n - 1} nor ignore {self.ignore_index}")
        p = np.where((p >= 0) & (p < n), p, n)
        counts = np.bincount(t * (n + 1) + p, minlength=n * (n + 1))
        self.matrix += counts.reshape(n, n + 1)
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {self.num_classes}-class confusion matrix with {other!r}")

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_compatible(other)
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_compatible(other)
        return ConfusionMatrix(self.num_classes, self.ignore_index, self.matrix + other.matrix)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"

    def scores(self) -> Scores:
        """Per-class and mean scores (see the module docstring for the conventions)."""
        m = self.matrix
        n = self.num_classes
        tp = np.diag(m[:, :n]).astype(np.int64)
        gt = m.sum(axis=1)
        pred = m[:, :n].sum(axis=0)
        fp = pred - tp
        fn = gt - tp
        denom = tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
            acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
        total = int(gt.sum())
        return Scores(
            iou=iou,
            accuracy=acc,
            true_positives=tp,
            gt_pixels=gt,
            pred_pixels=pred,
            void_pixels=int(m[:, n].sum()),
            miou=_nanmean(iou),
            macc=_nanmean(acc),
            pixel_accuracy=float(tp.sum()) / total if total else math.nan,
        )


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.sum() / defined.size) if defined.size else math.nan


@dataclass(frozen=True, eq=False)
class Scores:
    """Scores of one confusion matrix; per-class arrays are NaN where undefined."""

    iou: np.ndarray
    accuracy: np.ndarray
    true_positives: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray  # predictions of each class on counted pixels (TP + FP)
    void_pixels: int  # counted pixels predicted as no evaluated class
    miou: float
    macc: float
    pixel_accuracy: float

    def to_dict(self, class_names: Sequence[str]) -> dict:
        """JSON-ready dict (NaN -> None, since JSON has no NaN)."""
        _check_names(class_names, len(self.iou))
        return {
            "miou": _json_float(self.miou),
            "macc": _json_float(self.macc),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "void_pixels": self.void_pixels,
            "classes": [
                {
                    "name": name,
                    "iou": _json_float(self.iou[i]),
                    "acc": _json_float(self.accuracy[i]),
                    "gt_pixels": int(self.gt_pixels[i]),
                    "pred_pixels": int(self.pred_pixels[i]),
                }
                for i, name in enumerate(class_names)
            ],
        }


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _check_names(class_names: Sequence[str], n: int) -> None:
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")


def pct(value: float | None, digits: int = 2, missing: str = "-", unit: str = "") -> str:
    """A fraction as a percentage with ``digits`` decimals (and ``unit``); ``missing`` where the score
    is undefined (NaN, or None as the JSON reports write it). The one formatter of every report table."""
    if value is None or math.isnan(value):
        return missing
    return f"{100.0 * value:.{digits}f}{unit}"


def class_table(scores: Scores, class_names: Sequence[str], markdown: bool = True) -> str:
    """Per-class table (class, IoU %, Acc %, gt pixels) with a closing mean row.

    "-" marks an undefined score (class neither in the ground truth nor predicted, or no
    gt pixels for Acc); such classes are left out of the means.
    """
    _check_names(class_names, len(scores.iou))
    header = ("class", "IoU %", "Acc %", "gt pixels")
    rows = [
        (name, pct(scores.iou[i]), pct(scores.accuracy[i]), str(int(scores.gt_pixels[i])))
        for i, name in enumerate(class_names)
    ]
    rows.append(
        ("**mean**" if markdown else "mean", pct(scores.miou), pct(scores.macc), str(int(scores.gt_pixels.sum())))
    )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(row[c].rjust(widths[c]) for c in range(1, 4))])

    lines = [fmt(header), "-" * (sum(widths) + 6)]
    lines += [fmt(r) for r in rows[:-1]]
    lines += ["-" * (sum(widths) + 6), fmt(rows[-1])]
    return "\n".join(lines) + "\n"


def confusion_png(cm: ConfusionMatrix, class_names: Sequence[str], title: str = "") -> bytes:
    """Row-normalised confusion matrix as PNG bytes (matplotlib Agg, no pyplot global state).

    Rows (gt) sum to 1 including the void column, which is drawn only when it holds pixels.
    Cells carry percentages up to 25 classes; beyond that only colours, with small tick labels
    so 65 Vistas names stay legible.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_names(class_names, cm.num_classes)
    n = cm.num_classes
    show_void = bool(cm.matrix[:, n].any())
    counts = cm.matrix if show_void else cm.matrix[:, :n]
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(rows > 0, counts / np.maximum(rows, 1), 0.0)
    col_names = [*class_names, "(no class)"] if show_void else list(class_names)

    font = 8 if n <= 25 else 6
    longest = max(len(s) for s in col_names)
    label_room = 0.5 + longest * font / 72.0 * 0.6  # inches taken by the tick labels
    cell = 0.42 if n <= 25 else 0.2
    width = label_room + cell * len(col_names) + 1.4
    height = label_room + cell * n + 0.8
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((label_room / width, label_room / height, cell * len(col_names) / width, cell * n / height))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(col_names)), col_names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), class_names, fontsize=font)
    ax.set_xlabel("prediction", fontsize=font + 1)
    ax.set_ylabel("ground truth", fontsize=font + 1)
    if title:
        ax.set_title(title, fontsize=font + 2)
    if n <= 25:
        for r in range(n):
            for c in range(len(col_names)):
                value = norm[r, c]
                if value >= 0.005:  # an empty or "0" cell only clutters the plot
                    ax.text(
                        c,
                        r,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=font - 2,
                        color="white" if value > 0.5 else "black",
                    )
    cax = fig.add_axes(
        ((label_room + cell * len(col_names) + 0.2) / width, label_room / height, 0.15 / width, cell * n / height)
    )
    fig.colorbar(image, cax=cax)
    cax.tick_params(labelsize=font - 1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
