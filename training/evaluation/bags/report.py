"""Human report of a bag evaluation: ``report.html`` (PNGs embedded) plus the PNG files and ``report.md``.

Contents: the completeness verdict first (an incomplete run says so and why), headline numbers
(frames, drops, latency percentiles, rates, mIoU, sign recall and class accuracy), the per-dataset /
per-classifier summary of :class:`training.evaluation.evaluate.EvaluationReport` and the sign scores
as HTML tables, per-class IoU bar charts (only the classes in the ground truth or the predictions),
a latency histogram, the sample overlays saved during the run, each with the colour key of the
classes it shows, and a few frames with detected signs, boxes and class names drawn.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hiseg_ros.atomic import atomic_write_bytes
from training.evaluation.evaluate import EvaluationReport
from training.evaluation.metrics import pct

from .result import BagResult


@dataclass(frozen=True)
class SampleFigure:
    """A saved image of the report: an overlay with its colour key, or a frame with sign boxes."""

    caption: str
    png: str  # relative to the result folder
    legend: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (class, RGB) shown, most pixels first
    detected: tuple[str, ...] = ()  # sign figure: the detected signs' class names
    truth: tuple[str, ...] = ()  # sign figure: the true signs' class names


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def iou_bar_chart(class_names: Sequence[str], iou: Sequence[float | None], title: str) -> bytes:
    """Horizontal bar chart of per-class IoU (%); undefined classes are listed without a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [float("nan") if v is None else 100.0 * float(v) for v in iou]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(class_names) + 1.2))
    y = np.arange(len(class_names))
    ax.barh(y, [0.0 if math.isnan(v) else v for v in values], color="#3b7dd8")
    for i, v in enumerate(values):
        ax.text(min(v, 100.0) + 1 if not math.isnan(v) else 1, i, "-" if math.isnan(v) else f"{v:.1f}", va="center")
    ax.set_yticks(y, labels=list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("IoU %")
    ax.set_title(title)
    return _figure_png(fig)


def latency_histogram(values_ms: Sequence[float], title: str, xlabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    vals = np.asarray(values_ms, dtype=np.float64)
    if vals.size:
        ax.hist(vals, bins=min(50, max(5, vals.size // 2)), color="#d8833b")
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(vals, q))
            ax.axvline(v, color="k", linestyle=style, label=f"p{q} {v:.1f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("frames")
    ax.set_title(title)
    return _figure_png(fig)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _headline_rows(result: BagResult) -> list[tuple[str, str]]:
    frames, lat = result.frames, result.latency_ms
    rows = [
        ("mode", result.mode),
        ("complete", "yes" if result.complete else f"NO: {result.reason}"),
        ("bag", result.bag),
        ("model", result.model),
        ("frames in bag / processed / with outputs", f"{frames.in_bag} / {frames.processed} / {frames.with_outputs}"),
        ("dropped / partial / without ground truth", f"{frames.dropped} / {frames.partial} / {frames.without_gt}"),
        (
            f"{result.latency_kind} p50 / p95 / p99 (ms)",
            f"{_fmt(lat.p50)} / {_fmt(lat.p95)} / {_fmt(lat.p99)}",
        ),
        ("output rate (fps)", _fmt(result.fps, 2)),
    ]
    if result.live is not None:
        rates = (result.recorded_rate_hz, result.live.target_rate_hz, result.live.input_rate_hz)
        rows.append(("recorded / target / achieved input rate (Hz)", " / ".join(_fmt(r, 2) for r in rates)))
    for name, score in result.dataset_scores().items():
        rows.append((f"mIoU {name} (%)", _fmt(None if score.miou is None else 100.0 * score.miou, 2)))
    for subset, sign in result.sign_scores().items():
        rows.append(
            (
                f"signs {subset}: true / detected, recall / precision / class accuracy (%)",
                f"{sign.truth} / {sign.detections}, {pct(sign.recall)} / {pct(sign.precision)} / "
                f"{pct(sign.class_accuracy)}",
            )
        )
    return rows


def present_classes(res: Any) -> list[int]:
    """Indices of the classes of a label-space result that are in the ground truth or the predictions."""
    s = res.scores
    return [i for i in range(len(res.class_names)) if int(s.gt_pixels[i]) + int(s.pred_pixels[i]) > 0]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """An HTML table (escaped cells); ``css`` its class."""
    cls = f" class='{css}'" if css else ""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{cls}><thead>{head}</thead><tbody>{body}</tbody></table>"


def summary_tables(evaluation: EvaluationReport) -> list[str]:
    """The per-dataset and per-classifier summaries as HTML tables."""
    datasets = [
        (name, res.num_samples, pct(res.scores.miou), pct(res.scores.macc), pct(res.scores.pixel_accuracy),
         res.scores.void_pixels)
        for name, res in evaluation.datasets.items()
    ]  # fmt: skip
    classifiers = [
        (name, len(res.class_names), pct(res.scores.miou), pct(res.scores.macc), pct(res.scores.pixel_accuracy))
        for name, res in evaluation.classifiers.items()
    ]
    return [
        _table(("dataset", "frames", "mIoU %", "mAcc %", "pixel acc %", "no-class predictions"), datasets, "datasets"),
        _table(("classifier", "classes", "mIoU %", "mAcc %", "pixel acc %"), classifiers, "classifiers"),
    ]


def class_table(res: Any, css: str) -> str:
    """Per-class IoU / accuracy / pixels of the classes present (ground truth or predictions)."""
    s = res.scores
    rows = [
        (res.class_names[i], pct(s.iou[i]), pct(s.accuracy[i]), int(s.gt_pixels[i]), int(s.pred_pixels[i]))
        for i in present_classes(res)
    ]
    return _table(("class", "IoU %", "Acc %", "gt pixels", "predicted pixels"), rows, css)


def sign_tables(signs: dict[str, Any]) -> list[str]:
    """The sign scores: overall per size subset, then per class (every class with truth or detections)."""
    header = ("true", "detected", "matched", "right class", "precision %", "recall %", "class accuracy %")

    def cells(c: dict[str, Any]) -> tuple:
        return (c["truth"], c["detections"], c["matched_truth"], c["right_class"], pct(c["precision"]),
                pct(c["recall"]), pct(c["class_accuracy"]))  # fmt: skip

    subsets = [k for k, v in signs.items() if isinstance(v, dict) and "overall" in v]
    out = [_table(("signs", *header), [(k, *cells(signs[k]["overall"])) for k in subsets], "signs-overall")]
    for k in subsets:
        rows = [(name, *cells(c)) for name, c in signs[k]["classes"].items()]
        out.append(f"<h3>Per class, {html.escape(k)}</h3>" + _table(("class", *header), rows, f"signs-{k}"))
    return out


def _swatch(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def legend_html(entries: Sequence[tuple[str, Sequence[int]]]) -> str:
    """The colour key of one overlay: a swatch and the name of every class it shows."""
    items = "".join(
        f"<li data-class='{html.escape(name)}'><span class='swatch' style='background:{_swatch(rgb)}'></span>"
        f"{html.escape(name)}</li>"
        for name, rgb in entries
    )
    return f"<ul class='legend'>{items}</ul>"


def write_report(
    out_dir: Path,
    result: BagResult,
    evaluation: EvaluationReport | None,
    latencies_ms: Sequence[float],
    samples: Sequence[SampleFigure],
    sign_figures: Sequence[SampleFigure] = (),
) -> list[Path]:
    """Write report.html / report.md and the chart PNGs into ``out_dir`` (each file atomically).

    ``evaluation`` is the run's report object behind ``result.evaluation`` (None without ground
    truth, its charts need the confusion matrices); ``samples`` the saved sample overlays and
    ``sign_figures`` the frames with detected signs (PNG names relative to ``out_dir``).
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    charts: list[tuple[str, str, list[str]]] = []  # (caption, PNG, classes shown)
    if evaluation is not None:
        iou_charts = [
            (res, f"iou_{name}.png", f"{name}: per-class IoU ({res.num_samples} frames)", f"dataset {name}")
            for name, res in evaluation.datasets.items()
        ] + [
            (res, f"iou_classifier_{name}.png", f"classifier {name}: per-class IoU", f"classifier {name}")
            for name, res in evaluation.classifiers.items()
        ]
        for res, file_name, title, caption in iou_charts:
            shown = present_classes(res)
            names = [res.class_names[i] for i in shown]
            iou = [None if math.isnan(res.scores.iou[i]) else float(res.scores.iou[i]) for i in shown]
            png = out_dir / file_name
            atomic_write_bytes(png, iou_bar_chart(names, iou, title))
            charts.append((f"Per-class IoU, {caption}", png.name, names))
            written.append(png)
    kind = result.latency_kind
    png = out_dir / "latency_histogram.png"
    atomic_write_bytes(png, latency_histogram(latencies_ms, f"{kind} ({len(latencies_ms)} frames)", f"{kind} (ms)"))
    charts.insert(0, (f"Histogram of {kind}", png.name, []))
    written.append(png)

    rows = _headline_rows(result)
    md = ["# Bag evaluation", ""]
    if not result.complete:
        md += [f"**INCOMPLETE RESULT**: {result.reason}", ""]
    md += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    if result.notes:
        md += ["Notes:", "", *(f"- {n}" for n in result.notes), ""]
    if evaluation is not None:
        md += ["## Segmentation metrics", "", evaluation.summary_markdown()]
    else:
        md += ["No ground truth in the bag: no segmentation metrics.", ""]
    md += [f"![{cap}]({name})" for cap, name, _ in charts]
    md += ["", "## Sample overlays", "", *(f"![{s.caption}]({s.png})" for s in samples)]
    if sign_figures:
        md += ["", "## Traffic signs", "", *(f"![{s.caption}]({s.png})" for s in sign_figures)]
    report_md = out_dir / "report.md"
    atomic_write_bytes(report_md, ("\n".join(md) + "\n").encode())
    written.append(report_md)

    def img(name: str) -> str:
        data = base64.b64encode((out_dir / name).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Bag evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:0 0 1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.bad{color:#b00;font-weight:bold}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
        ".legend{list-style:none;padding:0;columns:3;font-size:85%}"
        ".swatch{display:inline-block;width:1em;height:1em;margin-right:.4em;border:1px solid #555;"
        "vertical-align:middle}</style></head><body>",
        "<h1>Bag evaluation</h1>",
    ]
    if not result.complete:
        parts.append(f"<p class='bad'>INCOMPLETE RESULT: {html.escape(str(result.reason))}</p>")
    parts.append(
        "<table class='headline'>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )
    if result.notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>")
    if evaluation is not None:
        parts.append("<h2>Segmentation metrics</h2>")
        parts += summary_tables(evaluation)
        for name, res in evaluation.datasets.items():
            parts.append(f"<h3>Per class, dataset {html.escape(name)}</h3>" + class_table(res, f"classes-{name}"))
    if result.signs is not None:
        rule = result.signs.get("rule") or {}
        parts.append(f"<h2>Traffic signs ({result.signs['frames']} frames with sign ground truth)</h2>")
        parts.append(
            f"<p>A detection matches a true sign at box IoU &gt;= {result.signs['box_iou']}; class accuracy = "
            "matched signs whose detection names the right class."
            + "".join(f" Detections made with {html.escape(k)} = {html.escape(str(v))}." for k, v in rule.items())
            + "</p>"
        )
        parts += sign_tables(result.signs)
    parts.append("<h2>Charts</h2>")
    for cap, name, classes in charts:
        shown = html.escape("\n".join(classes))
        parts.append(
            f"<figure class='chart' data-classes='{shown}'>{img(name)}"
            f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        )
    parts.append("<h2>Sample overlays</h2>")
    for s in samples:
        parts.append(
            f"<figure class='sample'>{img(s.png)}<figcaption>{html.escape(s.caption)}</figcaption>"
            f"{legend_html(s.legend)}</figure>"
        )
    if sign_figures:
        parts.append("<h2>Frames with detected signs</h2>")
    for s in sign_figures:
        detected = html.escape("\n".join(s.detected))
        listed = ", ".join(s.detected) or "none"
        truth = ", ".join(s.truth) or "none"
        parts.append(
            f"<figure class='signs' data-detected='{detected}'>{img(s.png)}<figcaption>{html.escape(s.caption)}"
            f"<br>detected: {html.escape(listed)}<br>true: {html.escape(truth)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    report_html = out_dir / "report.html"
    atomic_write_bytes(report_html, "\n".join(parts).encode())
    written.append(report_html)
    return written
