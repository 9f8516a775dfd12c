"""training.evaluation.bags.evaluate: offline (engine) and live (node over loopback DDS) evaluation of a bag.

One random-init iv2018 model is exported for the module (~30 s); bags are tiny (64 x 128, a few
frames), so the live runs take a few seconds each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_helpers import make_model

from hiseg_ros.messages import NODE_NAME, stamp_ns
from training import REPO
from training.data.readers.cityscapes import CityscapesDataset
from training.evaluation.bags.evaluate import EXIT_INCOMPLETE, EXIT_OK, evaluate_bag
from training.evaluation.bags.read import iter_frames, open_bag_info
from training.evaluation.bags.result import BagResult, FrameCounts
from training.evaluation.bags.sign_scores import SignScoring
from training.evaluation.bags.sign_truth import decode_signs
from training.evaluation.bags.write import image_cdr, write_bag, write_cityscapes_bag
from training.evaluation.evaluate import evaluate

START = 1_700_000_000_000_000_000
NS = f"/{NODE_NAME}"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    from training.data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, "small", only=["cityscapes"], scale=0.5)  # 64 x 128: train 6, val 3
    return out / "cityscapes"


@pytest.fixture(scope="module")
def drive(cityscapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "drive"
    return write_cityscapes_bag(cityscapes, out, "train", rate_hz=10.0, start_ns=START, storage="mcap").path


def _output_topics(hierarchy) -> set[str]:
    topics = {f"{NS}/{c}/mask" for c in hierarchy.classifier_names}
    return topics | {f"{NS}/mask", f"{NS}/colored", f"{NS}/overlay", f"{NS}/traffic_signs"}


def _bag_topics(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    from rosbags.rosbag2 import Reader

    out: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, bytes(raw)))
    return out


def _stamp(raw: bytes) -> int:
    sec, nsec = np.frombuffer(raw[4:12], dtype="<u4")
    return int(sec) * 10**9 + int(nsec)


def _no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert hidden == [], f"temporary folders left behind: {hidden}"


def _loaded_equals_written(out: Path, result: BagResult) -> dict:
    """metrics.json read back as a BagResult is the run's result and writes the same bytes again."""
    text = (out / "metrics.json").read_text()
    loaded = BagResult.load(out / "metrics.json")
    assert loaded == result and loaded.to_text() == text
    return json.loads(text)


def test_offline_metrics_equal_training_evaluate_and_output_bag(model, cityscapes, drive, tmp_path):
    from hiseg_ros.engines import create_engine

    out = tmp_path / "offline"
    code, result = evaluate_bag(
        [str(drive), "--model", str(model), "--out", str(out), "--no-progress", "--backend", "onnxruntime"]
    )
    assert code == EXIT_OK and result.complete is True and result.reason is None
    assert result.frames == FrameCounts(
        in_bag=6, processed=6, with_outputs=6, dropped=0, partial=0, with_gt=6, without_gt=0, late_outputs=0
    )
    assert result.latency_ms.count == 6 and result.latency_ms.p50 > 0 and result.fps > 0
    metrics = _loaded_equals_written(out, result)
    assert list(metrics) == [
        *("complete", "reason", "mode", "bag", "model", "dataset", "camera_topic", "label_topic", "frames"),
        *("latency_kind", "latency_ms", "fps", "wall_seconds", "engine", "engine_choice", "recorded_rate_hz"),
        *("output_bag", "output_topics", "evaluation", "classifier_view", "notes", "samples"),
        *("sign_topic", "signs"),
    ]
    assert metrics["frames"]["in_bag"] == 6 and metrics["engine"].startswith("onnxruntime")
    _check_sign_scores(metrics, drive)

    # the same frames through training.evaluation.evaluate give identical confusion matrices in both views
    engine, _ = create_engine(str(model), backend="onnxruntime")
    reference = evaluate(
        engine.hierarchy,
        lambda img: engine.infer(img).per_classifier,
        [CityscapesDataset(cityscapes, "train")],
        progress=False,
        plots=False,
    )
    ref = reference.to_dict()
    got = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert got["samples"] == ref["samples"] == {"cityscapes": 6}
    for view in ("classifiers", "datasets"):
        assert set(got[view]) == set(ref[view])
        for name in ref[view]:
            assert got[view][name]["confusion"] == ref[view][name]["confusion"], (view, name)
            assert got[view][name]["miou"] == ref[view][name]["miou"]

    # report files, sample overlays, nothing temporary left
    for name in ("metrics.json", "report.html", "report.md", "latency_histogram.png", "iou_cityscapes.png"):
        assert (out / name).is_file(), name
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert len(list((out / "samples").glob("frame_*.png"))) == 4
    _no_leftovers(tmp_path)

    # output bag: the inputs plus every output, at the input stamps and bag times
    topics = _bag_topics(out / "bag")
    inputs = {"/camera/image_raw", "/camera/labels", "/camera/traffic_signs_gt"}
    assert set(topics) == inputs | _output_topics(engine.hierarchy)
    in_times = [t for t, _ in topics["/camera/image_raw"]]
    assert in_times == [START + i * 100_000_000 for i in range(6)]
    for topic in _output_topics(engine.hierarchy):
        assert [t for t, _ in topics[topic]] == in_times, topic
        assert [_stamp(raw) for _, raw in topics[topic]] == in_times, topic
    # readable with the real message classes (what ros2 bag play would publish)
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    first = next(iter_frames(drive))
    leaf = deserialize_message(topics[f"{NS}/mask"][0][1], Image)
    expected = engine.infer(first.rgb).leaf
    np.testing.assert_array_equal(np.frombuffer(bytes(leaf.data), np.uint8).reshape(64, 128), expected)
    signs = deserialize_message(topics[f"{NS}/traffic_signs"][0][1], Detection2DArray)
    assert stamp_ns(signs.header.stamp) == START
    truth = deserialize_message(topics["/camera/traffic_signs_gt"][0][1], Detection2DArray)
    assert stamp_ns(truth.header.stamp) == START and decode_signs(truth) == first.signs
    # the scores are the node's detections in the output bag against its truth, frame by frame
    scoring = SignScoring(rule={"sign_split": "leaf", "min_sign_area": 16})  # the node's defaults
    for (_, det_raw), (_, gt_raw) in zip(
        topics[f"{NS}/traffic_signs"], topics["/camera/traffic_signs_gt"], strict=True
    ):
        scoring.add(
            decode_signs(deserialize_message(gt_raw, Detection2DArray)),
            decode_signs(deserialize_message(det_raw, Detection2DArray)),
        )
    assert scoring.to_json() == metrics["signs"]


def _check_sign_scores(metrics: dict, drive: Path) -> None:
    """The structure of the sign scores (a random-init model may find no sign), and a perfect
    detection list of the drive's truth scoring 1 through the same function."""
    assert metrics["sign_topic"] == "/camera/traffic_signs_gt"
    signs = metrics["signs"]
    assert (signs["box_iou"], signs["min_side"], signs["frames"]) == (0.5, 24, 6)
    assert signs["rule"] == {"sign_split": "leaf", "min_sign_area": 16}  # what the detections were made with
    truth = [f.signs for f in iter_frames(drive, decode=False)]
    n_true = sum(len(t) for t in truth)
    assert n_true > 0
    for subset in ("all", "at_least_24px"):
        overall = signs[subset]["overall"]
        keys = {"truth", "detections", "matched_truth", "matched_detections", "right_class"}
        assert keys | {"precision", "recall", "class_accuracy"} == set(overall)
        assert overall["matched_truth"] == overall["matched_detections"] <= min(overall["truth"], overall["detections"])
        for name, entry in signs[subset]["classes"].items():
            assert entry["truth"] + entry["detections"] > 0, name  # only classes present
    assert signs["all"]["overall"]["truth"] == n_true
    assert sum(e["truth"] for e in signs["all"]["classes"].values()) == n_true
    perfect = SignScoring()
    for t in truth:
        perfect.add(t, list(t))
    overall = perfect.to_json()["all"]["overall"]
    assert (overall["precision"], overall["recall"], overall["class_accuracy"]) == (1.0, 1.0, 1.0)


def test_offline_without_ground_truth_and_atomic_output(model, cityscapes, tmp_path):
    frames = [(s.image, None) for s in CityscapesDataset(cityscapes, "val")]
    bag = write_bag(tmp_path / "nogt", frames, rate_hz=5.0, start_ns=START, label_topic=None).path
    out = tmp_path / "res"
    code, result = evaluate_bag(
        [str(bag), "--model", str(model), "--out", str(out), "--no-progress", "--no-output-bag", "--samples", "1"]
    )
    assert code == EXIT_OK and result.complete and result.evaluation is None and result.dataset_scores() == {}
    assert result.frames.without_gt == 3 and not (out / "bag").exists() and result.output_bag is None
    with pytest.raises(FileExistsError):
        evaluate_bag([str(bag), "--model", str(model), "--out", str(out), "--no-progress"])
    before = (out / "metrics.json").read_text()
    code, _ = evaluate_bag([str(bag), "--model", str(model), "--out", str(out), "--overwrite", "--no-progress"])
    assert code == EXIT_OK and (out / "bag").is_dir() and (out / "metrics.json").read_text() != before
    _no_leftovers(tmp_path)


def test_bag_broken_midway_gives_an_incomplete_result(model, tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    bag = tmp_path / "broken"
    img = np.zeros((64, 128, 3), np.uint8)
    with Writer(bag, version=9) as writer:
        cam = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        lab = writer.add_connection("/camera/labels", "sensor_msgs/msg/Image", typestore=store)
        for i in range(4):
            t = START + i * 10**8
            writer.write(cam, t, image_cdr(img, "rgb8", t, "cam"))
            if i < 2:
                label = image_cdr(np.full((64, 128), 7, np.uint8), "mono8", t, "cam")
            else:  # an rgb8 "label" image from frame 2 on: not a label-id encoding
                label = image_cdr(np.zeros((64, 128, 3), np.uint8), "rgb8", t, "cam")
            writer.write(lab, t, label)
    out = tmp_path / "res"
    cmd = [
        sys.executable,
        "-m",
        "training.evaluation.bags.evaluate",
        str(bag),
        "--model",
        str(model),
        "--out",
        str(out),
    ]
    done = subprocess.run([*cmd, "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "INCOMPLETE" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["frames"]["processed"] == 2
    assert f"bag {bag}, topic /camera/labels: message 2" in metrics["reason"]
    assert "INCOMPLETE RESULT" in (out / "report.html").read_text()
    # nothing written for a bag that cannot be opened at all
    done = subprocess.run(
        [*cmd[:3], str(tmp_path / "missing"), *cmd[4:], "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "bag" in done.stderr and "missing" in done.stderr


# ---------------------------------------------------------------------------- live
@pytest.mark.ros
def test_live_every_frame_through_the_node(model, drive, tmp_path):
    out = tmp_path / "live"
    cmd = [
        sys.executable,
        "-m",
        "training.evaluation.bags.evaluate",
        str(drive),
        "--model",
        str(model),
        "--out",
        str(out),
    ]
    cmd += ["--mode", "live", "--rate-scale", "1.0", "--no-progress", "--startup-timeout", "60"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert out.is_dir(), done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [
        *("complete", "reason", "mode", "bag", "model", "dataset", "camera_topic", "label_topic", "frames"),
        *("latency_kind", "latency_ms", "fps", "input_rate_hz", "recorded_rate_hz", "rate_scale", "target_rate_hz"),
        *("wall_seconds", "output_bag", "output_topics", "node", "evaluation", "classifier_view", "notes", "samples"),
        "first_output_latency_ms",
        *("sign_topic", "signs"),
    ]
    assert BagResult.load(out / "metrics.json").to_text() == (out / "metrics.json").read_text()
    fr = metrics["frames"]
    # honest accounting: every published frame is complete, partial or dropped
    assert fr["processed"] == fr["in_bag"] == 6
    assert fr["with_outputs"] + fr["partial"] + fr["dropped"] == 6
    assert metrics["complete"] == (fr["with_outputs"] == 6) == (done.returncode == EXIT_OK), (metrics["reason"], done)
    assert fr["with_outputs"] == 6, f"frames lost at 10 Hz on 64x128: {metrics['reason']} {metrics['notes']}"
    lat = metrics["latency_ms"]
    assert lat["count"] == 6 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 5000
    assert metrics["first_output_latency_ms"]["p50"] <= lat["p50"]
    assert metrics["recorded_rate_hz"] == pytest.approx(10.0)
    assert metrics["input_rate_hz"] == pytest.approx(10.0, rel=0.2)
    assert metrics["fps"] > 0 and metrics["node"]["exit_code"] == 0
    assert (out / "node.log").is_file() and (out / "report.html").is_file()
    assert "Detections made with sign_split = leaf." in (out / "report.html").read_text()  # the node's rule

    # the per-dataset view of the node's masks equals the engine's offline result (exact view)
    code, offline = evaluate_bag(
        [str(drive), "--model", str(model), "--out", str(tmp_path / "off"), "--no-progress", "--no-output-bag"]
    )
    assert code == EXIT_OK
    live_ds = metrics["evaluation"]["datasets"]["cityscapes"]
    off_ds = offline.evaluation["datasets"]["cityscapes"]
    assert live_ds["confusion"] == off_ds["confusion"]
    # the node's ~/traffic_signs score as the offline find_signs on the same leaf maps
    _check_sign_scores(metrics, drive)
    assert metrics["signs"] == offline.signs
    root_live = metrics["evaluation"]["classifiers"]["root"]["confusion"]
    assert root_live == offline.evaluation["classifiers"]["root"]["confusion"]  # root is never blanked

    # output bag: inputs and all outputs, re-stamped to the input stamps, readable
    info = open_bag_info(out / "bag")
    assert info.frame_count == 6 and info.label_topic == "/camera/labels" and info.storage == "mcap"
    topics = _bag_topics(out / "bag")
    stamps = [START + i * 100_000_000 for i in range(6)]
    assert [t for t, _ in topics["/camera/image_raw"]] == stamps
    outputs = {t for t in topics if t.startswith(NS)}
    assert f"{NS}/overlay" in outputs and f"{NS}/root/mask" in outputs and f"{NS}/traffic_signs" in outputs
    for topic in outputs:
        assert sorted(_stamp(raw) for _, raw in topics[topic]) == stamps, topic
    _no_leftovers(tmp_path)


@pytest.mark.ros
def test_live_node_that_dies_gives_an_incomplete_result(model, drive, tmp_path):
    out = tmp_path / "live_bad"
    cmd = [
        sys.executable,
        "-m",
        "training.evaluation.bags.evaluate",
        str(drive),
        "--model",
        str(model),
        "--out",
        str(out),
    ]
    cmd += [
        "--mode",
        "live",
        "--no-progress",
        "--startup-timeout",
        "60",
        "--node-arg=-p",
        "--node-arg=outputs:=[bogus]",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is False and "node exited with code 2" in metrics["reason"]
    assert metrics["frames"]["with_outputs"] == 0 and metrics["node"]["exit_code"] == 2
    _no_leftovers(tmp_path)
