"""The main job (README command 1, ``python -m training.jobs.main_job``) end to end, reduced for CI.

Same path as the real command: small-preset synthetic data in tmp, a few training iterations at
tiny crops from the offline ImageNet weights, the ONNX export (~30 s), a 6-frame 64x128 drive bag,
the live replay through the node over loopback DDS, the report. Then the second run reuses every
stage. About 2-3 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from training import REPO
from training.evaluation.bags.read import open_bag_info
from training.evaluation.bags.result import (
    BagResult,
    FrameCounts,
    LatencyStats,
    LiveDetails,
    NodeDetails,
    OfflineDetails,
)
from training.evaluation.bags.sign_scores import SignScoring
from training.jobs.main_job import headline
from training.jobs.stages import Pipeline, digest

STAGE_HEADERS = [f"[{i}/7]" for i in range(1, 8)]


def _tiny_config(tmp_path: Path) -> Path:
    raw = {  # the demo config with a smaller crop (the variant's relative paths resolve against the base)
        "base": str(REPO / "config" / "training" / "demo.yaml"),
        "augment": {"crop": [64, 128], "base_height": 128},
        "run": {"num_workers": 0},
        "checkpoint": {"every": 2},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.jobs.main_job", "--data", str(tmp_path / "data"), "--preset", "small"]
    cmd += ["--out", str(tmp_path / "out"), "--config", str(tmp_path / "tiny.yaml"), "--iterations", "3"]
    cmd += ["--drive-split", "train", "--drive-size", "64", "128", "--rate", "5", "--workers", "1", "--no-progress"]
    return subprocess.run([*cmd, *extra], cwd=REPO, capture_output=True, text=True, timeout=420, check=False)


@pytest.mark.ros
def test_main_job_end_to_end_and_reuse(tmp_path: Path):
    _tiny_config(tmp_path)
    start = time.perf_counter()
    first = _demo(tmp_path)
    first_s = time.perf_counter() - start
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    positions = [out.find(h) for h in STAGE_HEADERS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out
    assert out.count(" done in ") + out.count(" reused in ") == 7  # every stage: header ... duration

    result = tmp_path / "out" / "live"
    for name in ("report.html", "report.md", "metrics.json", "node.log"):
        assert (result / name).is_file(), name
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "drive").is_dir()
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["complete"] and metrics["mode"] == "live"
    assert metrics["frames"]["in_bag"] == 6 and metrics["frames"]["dropped"] == 0
    assert str(result / "report.html") in out
    assert "mIoU per classifier: root " in out and "cityscapes mIoU: " in out
    assert "p50 " in out and "p95 " in out and "fps " in out and "0 dropped" in out
    # the drive carries the sign ground truth, and the replay scored the node's signs against it
    drive = open_bag_info(tmp_path / "out" / "drive")
    assert drive.sign_topic == "/camera/traffic_signs_gt" and drive.sign_count == 6
    assert metrics["sign_topic"] == drive.sign_topic and metrics["signs"]["frames"] == 6
    assert metrics["signs"]["all"]["overall"]["truth"] > 0
    assert "signs (all): recall " in out and "class accuracy " in out
    html = (result / "report.html").read_text()
    assert "<table class='signs-overall'>" in html and "<ul class='legend'>" in html
    train_manifest = json.loads((tmp_path / "out" / "stages" / "train.json").read_text())
    assert train_manifest["iterations"] == 3

    # second run: every stage's output exists and was made from the same settings -> reused
    start = time.perf_counter()
    second = _demo(tmp_path)
    second_s = time.perf_counter() - start
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for n in range(1, 7):
        assert f"[{n}/7] reused in " in second.stdout, (n, second.stdout)
    assert "mIoU per classifier: root " in second.stdout
    assert second_s < first_s / 2, (first_s, second_s)


def test_stage_manifests_key_and_outputs(tmp_path: Path):
    p = Pipeline(tmp_path, ("a",))
    out = tmp_path / "thing"
    key = digest({"x": 1})
    assert p.reusable("a", key, (out,)) is None
    out.write_text("x")
    p.complete("a", key, extra=5)
    assert p.reusable("a", key, (out,))["extra"] == 5
    assert p.reusable("a", digest({"x": 2}), (out,)) is None  # other settings: run again
    out.unlink()
    assert p.reusable("a", key, (out,)) is None  # output gone: run again
    out.write_text("x")
    p.invalidate("a")
    assert p.reusable("a", key, (out,)) is None


def test_failed_stage_is_named_and_exits_non_zero(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hierarchy: nowhere.yaml\ndatasets: []\n")
    cmd = [sys.executable, "-m", "training.jobs.main_job", "--data", str(tmp_path / "d"), "--config", str(bad)]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "error:" in done.stderr and "bad.yaml" in done.stderr


def test_headline_of_an_incomplete_result_shows_drops():
    result = BagResult(
        complete=False,
        reason="2 frame(s) got no output",
        mode="live",
        bag="drive",
        model="model.onnx",
        dataset="cityscapes",
        camera_topic="/camera/image_raw",
        label_topic="/camera/labels",
        frames=FrameCounts(
            in_bag=10, processed=10, with_outputs=8, dropped=2, partial=0, with_gt=8, without_gt=0, late_outputs=0
        ),
        latency_kind="latency stamp->all outputs",
        latency_ms=LatencyStats(8, 120.0, 300.0, 310.0, 150.0, 320.0),
        fps=3.5,
        wall_seconds=3.0,
        recorded_rate_hz=4.0,
        output_bag="bag",
        output_topics=[],
        evaluation={
            "classifiers": {"root": {"miou": 0.25, "num_samples": 8}},
            "datasets": {"cityscapes": {"miou": 0.1, "num_samples": 8}},
        },
        classifier_view="node masks",
        notes=[],
        samples=[],
        live=LiveDetails(3.9, 1.0, 4.0, NodeDetails(None, 0, "node.log", None), LatencyStats(8, 100.0)),
    )
    text = "\n".join(headline(result))
    assert "root 25.0 %" in text and "cityscapes mIoU: 10.0 % (8 frames)" in text and "2 dropped" in text
    assert "p95 300 ms" in text and "fps 3.50 (bag recorded at 4 Hz)" in text
    assert "signs" not in text  # no sign ground truth, no sign line


def test_headline_prints_sign_recall_and_class_accuracy():
    from dataclasses import replace

    from hiseg_ros.outputs import SignDetection

    def sign(x: int, name: str) -> SignDetection:
        return SignDetection(x, 0, 30, 30, 900, 0, name, 1.0)

    truth = [sign(0, "sign-stop"), sign(100, "sign-stop"), sign(200, "sign-give-way"), sign(300, "sign-stop")]
    detections = [sign(0, "sign-stop"), sign(100, "sign-give-way")]  # 2 of 4 found, 1 of them named right
    signs = SignScoring().add(truth, detections).to_json()
    base = BagResult(
        complete=True, reason=None, mode="offline", bag="drive", model="m.onnx", dataset="cityscapes",
        camera_topic="/camera/image_raw", label_topic="/camera/labels",
        frames=FrameCounts(1, 1, 1, 0, 0, 1, 0, 0), latency_kind="inference time",
        latency_ms=LatencyStats(1, 5.0), fps=2.0, wall_seconds=1.0, recorded_rate_hz=4.0, output_bag=None,
        output_topics=[], evaluation=None, classifier_view="v", notes=[], samples=[],
        offline=OfflineDetails("ort", "r"),
    )  # fmt: skip
    text = "\n".join(headline(replace(base, sign_topic="/camera/traffic_signs_gt", signs=signs)))
    assert "signs (all): recall 50.0 %, class accuracy 50.0 %, precision 100.0 % (4 true, 2 detected)" in text
    assert "signs (at_least_24px): recall 50.0 %" in text


def test_no_progress_silences_the_data_stage_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``--no-progress`` (CI logs, the documented fresh-clone command) reaches the dataset generator."""
    import argparse

    from training.jobs import main_job

    seen = {}

    def fake_generate(*args, progress: bool, **kwargs):
        seen["progress"] = progress
        raise RuntimeError("stop here")

    monkeypatch.setattr(main_job, "generate", fake_generate)
    for no_progress, expected in ((True, False), (False, True)):
        args = argparse.Namespace(data=tmp_path, preset="large", seed=0, workers=1, no_progress=no_progress)
        with pytest.raises(RuntimeError, match="stop here"):
            main_job.stage_data(args)
        assert seen["progress"] is expected
