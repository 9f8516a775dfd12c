"""Human report of a bag evaluation: ``report.html`` (PNGs embedded) plus the PNG files and ``report.md``.

Contents: the completeness verdict first (an incomplete run says so and why), headline numbers
(frames, drops, latency percentiles, rates, mIoU), the per-dataset / per-classifier summary of
:class:`training.evaluation.evaluate.EvaluationReport`, a per-class IoU bar chart per dataset, a latency
histogram and the sample overlays saved during the run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hiseg_ros.atomic import atomic_write_bytes
from training.evaluation.evaluate import EvaluationReport

from .result import BagResult


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
    return rows


def write_report(
    out_dir: Path,
    result: BagResult,
    evaluation: EvaluationReport | None,
    latencies_ms: Sequence[float],
    samples: Sequence[tuple[str, str]],
) -> list[Path]:
    """Write report.html / report.md and the chart PNGs into ``out_dir`` (each file atomically).

    ``evaluation`` is the run's report object behind ``result.evaluation`` (None without ground
    truth, its charts need the confusion matrices), ``samples`` (caption, PNG file name relative to
    ``out_dir``) of the saved sample overlays.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    charts: list[tuple[str, str]] = []
    if evaluation is not None:
        iou_charts = [
            (res, f"iou_{name}.png", f"{name}: per-class IoU ({res.num_samples} frames)", f"dataset {name}")
            for name, res in evaluation.datasets.items()
        ] + [
            (res, f"iou_classifier_{name}.png", f"classifier {name}: per-class IoU", f"classifier {name}")
            for name, res in evaluation.classifiers.items()
        ]
        for res, file_name, title, caption in iou_charts:
            iou = [None if math.isnan(v) else v for v in res.scores.iou]
            png = out_dir / file_name
            atomic_write_bytes(png, iou_bar_chart(res.class_names, iou, title))
            charts.append((f"Per-class IoU, {caption}", png.name))
            written.append(png)
    kind = result.latency_kind
    png = out_dir / "latency_histogram.png"
    atomic_write_bytes(png, latency_histogram(latencies_ms, f"{kind} ({len(latencies_ms)} frames)", f"{kind} (ms)"))
    charts.insert(0, (f"Histogram of {kind}", png.name))
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
    md += [f"![{cap}]({name})" for cap, name in charts]
    md += ["", "## Sample overlays", "", *(f"![{cap}]({name})" for cap, name in samples)]
    report_md = out_dir / "report.md"
    atomic_write_bytes(report_md, ("\n".join(md) + "\n").encode())
    written.append(report_md)

    def img(name: str) -> str:
        data = base64.b64encode((out_dir / name).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Bag evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.bad{color:#b00;font-weight:bold}"
        "figure{display:inline-block;margin:0 1em 1em 0}</style></head><body>",
        "<h1>Bag evaluation</h1>",
    ]
    if not result.complete:
        parts.append(f"<p class='bad'>INCOMPLETE RESULT: {html.escape(str(result.reason))}</p>")
    parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows))
    parts.append("</table>")
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>")
    if evaluation is not None:
        parts.append("<h2>Segmentation metrics</h2><pre>" + html.escape(evaluation.summary_markdown()) + "</pre>")
    parts.append("<h2>Charts</h2>")
    parts += [f"<figure>{img(name)}<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, name in charts]
    parts.append("<h2>Sample overlays</h2>")
    parts += [f"<figure>{img(name)}<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, name in samples]
    parts.append("</body></html>")
    report_html = out_dir / "report.html"
    atomic_write_bytes(report_html, "\n".join(parts).encode())
    written.append(report_html)
    return written
