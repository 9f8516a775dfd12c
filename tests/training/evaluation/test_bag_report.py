"""training.evaluation.bags.report: report.html parsed with the standard library's html.parser: real
tables, no Markdown left in the page, a colour key per overlay of exactly the classes it shows, sign
figures when signs were detected, and charts without the classes that are nowhere."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np

from hiseg_ros.outputs import SignDetection
from training.evaluation.bags.report import SampleFigure, write_report
from training.evaluation.bags.result import BagResult, FrameCounts, LatencyStats, OfflineDetails
from training.evaluation.bags.sign_scores import SignScoring
from training.evaluation.evaluate import EvaluationReport, LabelSpaceResult
from training.evaluation.metrics import ConfusionMatrix


class Page(HTMLParser):
    """Tables (css class -> rows of cell texts), figures (attributes, legend classes) and body text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.figures: list[dict] = []
        self.text: list[str] = []
        self._stack: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._stack.append(tag)
        if tag == "table":
            self.tables.append((attrs.get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "figure":
            self.figures.append({"attrs": attrs, "legend": [], "swatches": []})
        elif tag == "li" and "data-class" in attrs and self.figures:
            self.figures[-1]["legend"].append(attrs["data-class"])
        elif tag == "span" and attrs.get("class") == "swatch" and self.figures:
            self.figures[-1]["swatches"].append(attrs["style"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data):
        if "style" in self._stack or "title" in self._stack:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, css: str) -> list[list[str]]:
        (rows,) = [rows for c, rows in self.tables if c == css]
        return rows


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((4, 6, 3), np.uint8))


def _evaluation() -> EvaluationReport:
    names = ("road", "car", "sky", "bus")
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))  # bus: neither in the truth nor predicted
    root = ConfusionMatrix(2)
    root.update(np.array([0, 1]), np.array([0, 1]))
    return EvaluationReport(
        "h",
        classifiers={"root": LabelSpaceResult("root", ("flat", "object"), root, 1)},
        datasets={"cityscapes": LabelSpaceResult("cityscapes", names, cm, 1)},
        samples={"cityscapes": 1},
    )


def _result(signs: dict | None, evaluation: EvaluationReport) -> BagResult:
    return BagResult(
        complete=True, reason=None, mode="offline", bag="/b", model="/m.onnx", dataset="cityscapes",
        camera_topic="/camera/image_raw", label_topic="/camera/labels",
        frames=FrameCounts(1, 1, 1, 0, 0, 1, 0, 0), latency_kind="inference time",
        latency_ms=LatencyStats.of([5.0]), fps=10.0, wall_seconds=0.1, recorded_rate_hz=10.0, output_bag=None,
        output_topics=[], evaluation=evaluation.to_dict(), classifier_view="raw engine decisions",
        notes=[], samples=["samples/frame_000000.png"],
        offline=OfflineDetails("onnxruntime", "requested"), sign_topic="/camera/traffic_signs_gt", signs=signs,
    )  # fmt: skip


def _write(tmp_path: Path, sign_figures: list[SampleFigure]) -> Page:
    stop = SignDetection(0, 0, 30, 30, 900, 1, "sign-stop", 1.0)
    small = SignDetection(50, 0, 10, 10, 100, 2, "sign-give-way", 1.0)
    signs = SignScoring().add([stop, small], [stop]).to_json()
    evaluation = _evaluation()
    key = (("road", (128, 64, 128)), ("car", (0, 0, 142)))
    sample = SampleFigure("frame 0: input (left), overlay (right)", "samples/frame_000000.png", key)
    for name in [sample.png, *(f.png for f in sign_figures)]:
        _png(tmp_path / name)
    write_report(tmp_path, _result(signs, evaluation), evaluation, [5.0], [sample], sign_figures)
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    return page


def test_report_html_has_tables_legends_sign_figures_and_no_markdown(tmp_path):
    figure = SampleFigure("frame 0: detected signs", "samples/signs_000000.png", (), ("sign-stop",), ("sign-stop",))
    page = _write(tmp_path, [figure])
    body = "".join(page.text)
    assert "|" not in body and "---" not in body, "no Markdown table left in the page"
    datasets = page.table("datasets")
    assert datasets[0][0] == "dataset" and [r[0] for r in datasets[1:]] == ["cityscapes"]
    assert datasets[1][1:3] == ["1", "27.78"]  # mIoU: road 1/2, car 1/3, sky 0 (bus undefined, left out)
    assert [r[0] for r in page.table("classifiers")[1:]] == ["root"]
    # per class: only the classes in the truth or the predictions (bus is nowhere)
    per_class = page.table("classes-cityscapes")
    assert [r[0] for r in per_class[1:]] == ["road", "car", "sky"]
    assert [r[1] for r in per_class[1:]] == ["50.00", "33.33", "0.00"]
    # sign tables: one row per size subset, per-class rows only for classes with truth or detections
    overall = page.table("signs-overall")
    assert [r[0] for r in overall[1:]] == ["all", "at_least_24px"]
    assert overall[1][1:4] == ["2", "1", "1"] and overall[1][6] == "50.00"  # 2 true, 1 detected, recall 50 %
    assert [r[0] for r in page.table("signs-all")[1:]] == ["sign-give-way", "sign-stop"]
    assert [r[0] for r in page.table("signs-at_least_24px")[1:]] == ["sign-stop"]
    # legend: exactly the classes of the overlay, with their colours
    (sample,) = [f for f in page.figures if f["attrs"].get("class") == "sample"]
    assert sample["legend"] == ["road", "car"]
    assert sample["swatches"] == ["background:#804080", "background:#00008e"]
    # the sign figure names what was detected
    (signs,) = [f for f in page.figures if f["attrs"].get("class") == "signs"]
    assert signs["attrs"]["data-detected"] == "sign-stop"
    # charts: IoU charts list the present classes only
    charts = {f["attrs"]["data-classes"] for f in page.figures if f["attrs"].get("class") == "chart"}
    assert "road\ncar\nsky" in charts and not any("bus" in c for c in charts)


def test_report_without_detected_signs_has_no_sign_figure_and_markdown_stays_in_report_md(tmp_path):
    page = _write(tmp_path, [])
    assert not [f for f in page.figures if f["attrs"].get("class") == "signs"]
    assert "| dataset |" in (tmp_path / "report.md").read_text()
    no_signs = dataclasses.replace(_result(None, _evaluation()), sign_topic=None)
    write_report(tmp_path, no_signs, _evaluation(), [], [])
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert not [c for c, _ in page.tables if c.startswith("signs")]
