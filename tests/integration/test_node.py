"""The segmentation node in its own process, talking to this test process over loopback DDS.

The node is started the way launch/hiseg.launch.py starts it (node_process.launch_ros_args, which
tests/training/evaluation/test_launch_file.py checks against the launch file);
its outputs are compared with what the engine computes for the same image in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from node_helpers import Client, get_parameters, make_model, reference_engine, wait_until

from hiseg_ros import node as node_module
from hiseg_ros import node_params, outputs
from hiseg_ros.diagnostics import ERROR, OK, WARN, FrameStats, InputLimits
from hiseg_ros.imaging import compressed_to_rgb, image_to_rgb
from training import REPO
from training.evaluation.bags import node_process
from training.evaluation.bags.node_process import NodeProcess

pytestmark = pytest.mark.ros

NODE = node_module.NODE_NAME
NS = f"/{NODE}"
CAMERA = "/cam/image"
PARAMS = REPO / "config" / "hiseg.yaml"
RVIZ = REPO / "config" / "hiseg.rviz"


def test_config_file_sets_exactly_the_declared_parameters_with_valid_values():
    data = yaml.safe_load(PARAMS.read_text())
    assert list(data) == ["/**"], "keyed for every node name and namespace"
    values = node_params.read_params_file(PARAMS)
    spec = node_params.SPEC
    assert set(values) == set(spec)
    for name, value in values.items():
        p = spec[name]
        assert type(value) is type(p.default), (name, value)
        if name != "model_path":
            assert node_params.check_value(p, value) is None, name
    assert set(values["outputs"]) == set(outputs.OUTPUTS)


def _rviz_topics() -> dict[str, str]:
    cfg = yaml.safe_load(RVIZ.read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    return {d["Topic"]["Value"]: d["Class"] for d in displays if "Topic" in d}


def test_rviz_config_shows_overlay_colored_and_every_iv2018_classifier():
    from hiseg_ros.hierarchy import load_hierarchy

    h = load_hierarchy(REPO / "config" / "hierarchies" / "iv2018.yaml")
    # RViz 2 shows a mono8 index mask almost black (Normalize Range does nothing for mono8): the
    # per-classifier colour images instead
    expected = {f"{NS}/overlay", f"{NS}/colored"} | {f"{NS}/{c}/colored" for c in h.classifier_names}
    topics = _rviz_topics()
    assert set(topics) == expected
    assert "Normalize Range has no effect" in RVIZ.read_text().split("Panels:")[0]
    assert set(topics.values()) == {"rviz_default_plugins/Image"}


def test_frame_stats_rates_percentiles_drops_and_levels():
    now = [100.0]
    no_input_checks = InputLimits(stale_warn_s=1e3, stale_error_s=1e3)  # tests/runtime/test_diagnostics.py
    stats = FrameStats(rate_window_s=2.0, hold_s=1.0, clock=lambda: now[0], limits=no_input_checks)
    for i in range(10):
        now[0] = 100.0 + 0.1 * i
        arrival = stats.on_received(overwrote_pending=i % 2 == 1)
        now[0] += 0.02 + 0.001 * i
        stats.on_processed(arrival, 0.01)
    snap = stats.snapshot()
    assert snap.level == OK and snap.received == 10 and snap.processed == 10 and snap.dropped == 5
    assert snap.input_rate == pytest.approx(5.0) and snap.latency_p50_ms == pytest.approx(24.5, abs=0.6)
    assert snap.latency_p95_ms > snap.latency_p50_ms
    stats.on_bad_input("encoding: nope")
    assert stats.snapshot().level == WARN and "nope" in stats.snapshot().message
    now[0] += 2.0
    assert stats.snapshot().level == OK and stats.snapshot().last_error.endswith("nope")
    stats.on_error("boom")
    assert stats.snapshot().level == ERROR
    assert dict(stats.snapshot().values())["bad_inputs"] == "1"


# ---------------------------------------------------------------------------- the running node
@pytest.fixture(scope="session")
def model(exported_model) -> Path:
    return exported_model  # tests/conftest.py: exported once per session


@pytest.fixture(scope="session")
def engine(model):
    return reference_engine(model)


@pytest.fixture(scope="module")
def running(model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = NodeProcess.start(node_process.launch_ros_args(model, CAMERA), log)
    client = Client("hiseg_test_client")
    try:
        proc.wait_ready(lambda: NODE in client.node.get_node_names(), 60.0, "appear in the ROS graph")
        yield proc, client, log
    finally:
        client.close()
        code = proc.stop()
        assert code == 0, f"node exit code {code} after SIGINT:\n{log.read_text()}"


_stamp_counter = [0]


def _image_msg(rgb: np.ndarray, encoding: str, pad: int = 0, frame_id: str = "cam_optical") -> Any:
    """A sensor_msgs/Image of ``rgb`` in ``encoding`` with ``pad`` bytes of row padding, unique stamp."""
    from sensor_msgs.msg import Image

    if encoding == "rgb8":
        plane = rgb
    elif encoding == "bgr8":
        plane = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        plane = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    elif encoding == "mono8":
        plane = rgb[:, :, 1]
    elif encoding == "mono16":
        plane = (rgb[:, :, 0].astype(np.uint16) << 8 | rgb[:, :, 2]).astype("<u2").view(np.uint8)
        plane = plane.reshape(rgb.shape[0], rgb.shape[1] * 2)
    elif encoding == "uyvy":
        plane = cv2.cvtColor(rgb[:, :, ::-1], cv2.COLOR_BGR2YUV)  # any plausible bytes: 2 per pixel
        plane = plane[:, :, :2].copy()
    else:
        raise ValueError(encoding)
    plane = np.ascontiguousarray(plane).reshape(rgb.shape[0], -1)
    rows = np.zeros((plane.shape[0], plane.shape[1] + pad), np.uint8)
    rows[:, : plane.shape[1]] = plane
    _stamp_counter[0] += 1
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rows.shape[1])
    msg.data = rows.tobytes()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = 1_700_000_000 + _stamp_counter[0]
    msg.header.stamp.nanosec = 123
    return msg


def _mask_topics(engine) -> list[str]:
    return [f"{NS}/{c}/mask" for c in engine.hierarchy.classifier_names]


def _subscribe_outputs(client: Client, ns: str, classifiers) -> list[str]:
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    topics = [f"{ns}/{c}/{kind}" for c in classifiers for kind in ("mask", "colored")]
    topics += [f"{ns}/mask", f"{ns}/colored", f"{ns}/overlay"]
    for topic in topics:
        if topic not in client.received:
            client.subscribe(Image, topic)
    if f"{ns}/traffic_signs" not in client.received:
        client.subscribe(Detection2DArray, f"{ns}/traffic_signs")
    return [*topics, f"{ns}/traffic_signs"]


def _matching(client: Client, topic: str, stamp) -> Any:
    for msg in reversed(client.messages(topic)):
        if msg.header.stamp == stamp:
            return msg
    return None


def _publish_until(client: Client, publisher, msg, topics: list[str], timeout: float = 30.0) -> dict[str, Any]:
    """Publish ``msg`` every 0.25 s until every topic delivered a message with its stamp."""

    def all_there():
        got = {t: _matching(client, t, msg.header.stamp) for t in topics}
        return got if all(v is not None for v in got.values()) else None

    got = wait_until(all_there, timeout, action=lambda: publisher.publish(msg))
    missing = [t for t in topics if _matching(client, t, msg.header.stamp) is None]
    assert got, f"no output with stamp {msg.header.stamp.sec} on {missing}"
    return got


def _plane(msg) -> np.ndarray:
    dtype = {"mono8": np.uint8, "mono16": np.uint16, "rgb8": np.uint8}[msg.encoding]
    channels = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, msg.step // np.dtype(dtype).itemsize)
    arr = arr[:, : msg.width * channels]
    return arr.reshape(msg.height, msg.width, channels) if channels == 3 else arr


def _check_outputs(
    got: dict[str, Any],
    msg,
    rgb: np.ndarray,
    engine,
    ns: str,
    alpha: float,
    min_area: int,
    fit_hw: tuple[int, int] | None = None,
) -> None:
    """Every output in ``got`` equals what the engine + hiseg_ros.outputs give for ``rgb`` here."""
    from hiseg_ros.engines import PAD_VALUE_RGB

    h = engine.hierarchy
    net_in, fit = outputs.fit_input(rgb, fit_hw, PAD_VALUE_RGB)
    raw = engine.infer(np.ascontiguousarray(net_in))
    per, leaf = outputs.restore_decisions(raw.per_classifier, raw.leaf, fit)
    masks = outputs.classifier_masks(h, per, leaf)
    colored = outputs.colorize(h, leaf)
    signs = outputs.find_signs(h, leaf, outputs.sign_leaf_lut(h, "traffic-sign-front"), min_area)
    for topic, out in got.items():
        assert out.header.frame_id == msg.header.frame_id and out.header.stamp == msg.header.stamp, topic
        if topic.endswith("/traffic_signs"):
            assert [
                (d.bbox.center.position.x, d.bbox.size_x, d.results[0].hypothesis.class_id) for d in out.detections
            ] == [(s.center[0], float(s.width), s.class_name) for s in signs]
            continue
        assert (out.height, out.width) == rgb.shape[:2], topic
        name = topic[len(ns) + 1 :]
        if name.endswith("/mask"):
            assert out.encoding == "mono8"
            np.testing.assert_array_equal(_plane(out), masks[name[: -len("/mask")]], err_msg=topic)
        elif name.endswith("/colored"):  # a classifier's mask in its classes' colours
            assert out.encoding == "rgb8"
            clf = name[: -len("/colored")]
            expected = outputs.classifier_palette(h, clf)[masks[clf]]
            np.testing.assert_array_equal(_plane(out), expected, err_msg=topic)
        elif name == "mask":
            assert out.encoding == ("mono8" if h.mask_dtype is np.uint8 else "mono16")
            np.testing.assert_array_equal(_plane(out), leaf, err_msg=topic)
        elif name == "colored":
            assert out.encoding == "rgb8"
            np.testing.assert_array_equal(_plane(out), colored, err_msg=topic)
        elif name == "overlay":
            assert out.encoding == "rgb8"
            expected = outputs.overlay(np.ascontiguousarray(rgb), colored, alpha, signs, h.palette)
            np.testing.assert_array_equal(_plane(out), expected, err_msg=topic)


CASES = [
    ("rgb8", 64, 96, 0),
    ("bgr8", 48, 80, 16),
    ("rgba8", 40, 56, 0),
    ("mono8", 64, 96, 3),
    ("mono16", 32, 48, 0),
    ("uyvy", 64, 96, 8),
]


def test_outputs_equal_the_engine_for_several_encodings_and_sizes(running, engine):
    _, client, _ = running
    topics = _subscribe_outputs(client, NS, engine.hierarchy.classifier_names)
    publisher = client.node.create_publisher(type(_image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8")), CAMERA, 1)
    rng = np.random.default_rng(7)
    cfg = node_params.read_params_file(PARAMS)
    for encoding, height, width, pad in CASES:
        rgb_in = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        msg = _image_msg(rgb_in, encoding, pad, frame_id=f"cam_{encoding}")
        got = _publish_until(client, publisher, msg, topics)
        rgb = image_to_rgb(msg)  # what the node sees (mono / YUV inputs become grey / converted RGB)
        _check_outputs(got, msg, rgb, engine, NS, cfg["overlay_alpha"], cfg["min_sign_area"])


def test_node_publishes_the_topics_rviz_shows(running, engine):
    _, client, _ = running
    pubs = wait_until(lambda: client.node.get_publisher_names_and_types_by_node(NODE, "/"), 10.0)
    topics = {name for name, _ in pubs}
    assert set(_rviz_topics()) <= topics
    for clf in engine.hierarchy.classifier_names:
        assert {f"{NS}/{clf}/mask", f"{NS}/{clf}/label_info"} <= topics
    assert {f"{NS}/mask", f"{NS}/label_info", f"{NS}/traffic_signs", "/diagnostics"} <= topics
    subs = client.node.get_subscriber_names_and_types_by_node(NODE, "/")
    assert (CAMERA, ["sensor_msgs/msg/Image"]) in subs


def test_label_info_reaches_a_late_subscriber(running, engine):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import LabelInfo

    _, client, _ = running
    h = engine.hierarchy
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    topics = [f"{NS}/{c}/label_info" for c in h.classifier_names] + [f"{NS}/label_info"]
    for topic in topics:
        client.subscribe(LabelInfo, topic, qos)
    assert wait_until(lambda: all(client.messages(t) for t in topics), 20.0), "label_info missing"
    for clf in h.classifiers:
        (msg,) = client.messages(f"{NS}/{clf.name}/label_info")
        pairs = [(c.class_id, c.class_name) for c in msg.class_map]
        assert pairs == [*enumerate(clf.classes), (255, "unlabeled")]
    (leaf_msg,) = client.messages(f"{NS}/label_info")
    assert [(c.class_id, c.class_name) for c in leaf_msg.class_map] == [
        *((leaf.id, leaf.name) for leaf in h.leaves),
        (h.void_value, "unlabeled"),
    ]


def _diagnostics(client: Client, fqn: str) -> list[Any]:
    out = []
    for arr in client.messages("/diagnostics"):
        for status in arr.status:
            if status.hardware_id == fqn:
                out.append(status)
    return out


def _count(status, key: str) -> int:
    return int(dict((kv.key, kv.value) for kv in status.values)[key])


def _bad_count(status) -> int:
    return _count(status, "bad_inputs")


def _expect_bad_then_good(client, publisher, fqn, bad, good, topics, what) -> None:
    before = max([_bad_count(s) for s in _diagnostics(client, fqn)] or [0])

    def warned():
        return next((s for s in _diagnostics(client, fqn) if _bad_count(s) > before), None)

    status = wait_until(warned, 15.0, action=lambda: publisher.publish(bad))
    assert status is not None, f"{what}: no diagnostics counted the bad input"
    # the merged status also carries the input checks (rate, stamps): at least WARN, the bad input named
    assert status.level[0] >= WARN and "bad input" in status.message, (what, status)
    _publish_until(client, publisher, good, topics)


def test_bad_inputs_warn_and_the_next_valid_frame_is_processed(running, engine):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    proc, client, log = running
    if "/diagnostics" not in client.received:
        client.subscribe(DiagnosticArray, "/diagnostics")
    topics = [f"{NS}/root/mask", f"{NS}/mask"]
    _subscribe_outputs(client, NS, engine.hierarchy.classifier_names)
    publisher = client.node.create_publisher(Image, CAMERA, 1)
    rgb = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)

    def bad(**fields):
        msg = _image_msg(rgb, "rgb8")
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    cases = {
        "unknown encoding": bad(encoding="32FC1"),
        "step inconsistent with width": bad(step=64 * 3 - 3),
        "truncated data": bad(data=bytes(48 * 64 * 3 - 100)),
        "0x0": bad(height=0, width=0, step=0, data=b""),
        "larger than 8K": bad(height=4321, width=7680, step=7680 * 3, data=bytes(16)),
    }
    for what, msg in cases.items():
        _expect_bad_then_good(client, publisher, NS, msg, _image_msg(rgb, "rgb8"), topics, what)
        assert proc.poll() is None, f"node died after {what}:\n{log.read_text()}"
    text = log.read_text()
    assert "dropping bad input image" in text and "encoding" in text


def test_latest_frame_only_drops_frames_arriving_faster_than_inference(running):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    _, client, _ = running
    if "/diagnostics" not in client.received:
        client.subscribe(DiagnosticArray, "/diagnostics")
    # The node skips frames nobody subscribes to: this test subscribes itself instead of relying on
    # the outputs earlier tests of the module happened to subscribe to.
    if f"{NS}/mask" not in client.received:
        client.subscribe(Image, f"{NS}/mask")
    assert wait_until(lambda: client.node.count_publishers(f"{NS}/mask") >= 1, 10.0)
    assert wait_until(lambda: _diagnostics(client, NS), 10.0)
    before = _diagnostics(client, NS)[-1]
    publisher = client.node.create_publisher(Image, CAMERA, 1)
    rgb = np.random.default_rng(11).integers(0, 256, (256, 384, 3), dtype=np.uint8)
    msgs = [_image_msg(rgb, "rgb8") for _ in range(40)]
    time.sleep(0.5)  # let the node match the new publisher
    for msg in msgs:
        publisher.publish(msg)
        time.sleep(0.002)

    def settled():
        last = _diagnostics(client, NS)[-1]
        received = _count(last, "frames_received") - _count(before, "frames_received")
        counted = ("frames_processed", "frames_dropped", "frames_skipped_no_subscribers")
        done = sum(_count(last, k) - _count(before, k) for k in counted)
        return last if received >= 5 and done >= received else None

    last = wait_until(settled, 20.0)
    assert last is not None, f"diagnostics never accounted for the burst: {_diagnostics(client, NS)[-1].values}"
    dropped = _count(last, "frames_dropped") - _count(before, "frames_dropped")
    processed = _count(last, "frames_processed") - _count(before, "frames_processed")
    skipped = _count(last, "frames_skipped_no_subscribers") - _count(before, "frames_skipped_no_subscribers")
    assert dropped >= 1 and processed >= 1 and skipped == 0, (dropped, processed, skipped)
    values = dict((kv.key, kv.value) for kv in last.values)
    assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"]) > 0.0


def test_compressed_input_and_corrupt_compressed_data(model, engine, tmp_path):
    """A second node on ``<image>/compressed``: PNG frames are processed, corrupt data is a warning."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage

    ns, camera = "/hiseg_compressed", "/cam2/image"
    args = ["-r", "__node:=hiseg_compressed", "-p", f"model_path:={model}", "-p", "use_compressed:=true"]
    args += ["-p", "resize.policy:=fit", "-p", "resize.width:=64", "-p", "resize.height:=64"]
    args += ["-p", "overlay_alpha:=0.3", "-p", "min_sign_area:=4", "-r", f"image:={camera}"]
    proc = NodeProcess.start(args, tmp_path / "node.log")
    client = Client("hiseg_test_compressed")
    try:
        client.subscribe(DiagnosticArray, "/diagnostics")
        publisher = client.node.create_publisher(CompressedImage, f"{camera}/compressed", 1)
        rgb = np.random.default_rng(5).integers(0, 256, (48, 80, 3), dtype=np.uint8)

        def compressed(fmt: str, data: bytes) -> CompressedImage:
            msg = CompressedImage(format=fmt)
            msg.data = data
            msg.header = _image_msg(rgb, "rgb8").header
            return msg

        png = compressed("png", cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())

        # nobody listens to the outputs yet: frames are received but not computed
        def skipped():
            return next((s for s in _diagnostics(client, ns) if _count(s, "frames_skipped_no_subscribers") > 0), None)

        status = wait_until(skipped, 60.0, action=lambda: publisher.publish(png))
        assert status is not None and _count(status, "frames_processed") == 0, (tmp_path / "node.log").read_text()

        topics = _subscribe_outputs(client, ns, engine.hierarchy.classifier_names)
        got = _publish_until(client, publisher, png, topics, timeout=30.0)
        # the image is fitted into 64x64 (keep aspect, pad) for the network, outputs come back at 48x80
        _check_outputs(got, png, compressed_to_rgb(png), engine, ns, 0.3, 4, fit_hw=(64, 64))
        corrupt = compressed("jpeg", b"\xff\xd8\xff\xe0" + bytes(200))
        jpeg = compressed("jpeg", cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes())
        _expect_bad_then_good(client, publisher, ns, corrupt, jpeg, [f"{ns}/mask"], "corrupt jpeg")
        assert proc.poll() is None
    finally:
        client.close()
        assert proc.stop(sig=signal.SIGTERM) == 0, (tmp_path / "node.log").read_text()


# ---------------------------------------------------------------------------- start-up failures
def test_missing_or_corrupt_model_and_bad_parameters_exit_non_zero(model, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx model" * 50)
    broken_hierarchy = tmp_path / "broken.yaml"
    broken_hierarchy.write_text("name: x\nclasses: [{name: a, id: 0, parent: nowhere}]\n")
    other_hierarchy = REPO / "config" / "hierarchies" / "iv2019.yaml"
    cases = {
        "missing model": (["-p", f"model_path:={tmp_path / 'nope.onnx'}"], 1, "does not exist"),
        "corrupt model": (["-p", f"model_path:={corrupt}"], 1, "cannot load model"),
        "no model_path": ([], 2, "model_path: required"),
        "corrupt hierarchy": (
            ["-p", f"model_path:={model}", "-p", f"hierarchy_path:={broken_hierarchy}"],
            1,
            "hierarchy_path",
        ),
        "other hierarchy": (
            ["-p", f"model_path:={model}", "-p", f"hierarchy_path:={other_hierarchy}"],
            1,
            "does not match",
        ),
        "bad parameters": (
            ["-p", f"model_path:={model}", "-p", "backend:=cuda", "-p", "resize.policy:=stretch"],
            2,
            "backend: 'cuda' is not one of",
        ),
        "unknown sign class": (["-p", f"model_path:={model}", "-p", "sign_class:=stop-sign"], 2, "sign_class"),
    }
    procs = {
        what: NodeProcess.start(["-r", f"__node:=hiseg_fail_{i}_{time.monotonic_ns()}", *args], tmp_path / f"{i}.log")
        for i, (what, (args, _, _)) in enumerate(cases.items())
    }
    for what, (_, code, text) in cases.items():
        proc = procs[what]
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.stop()
            pytest.fail(f"{what}: node did not exit")
        err = proc.log_text()
        assert proc.returncode == code, f"{what}: exit {proc.returncode}\n{err}"
        assert text in err, f"{what}: {text!r} not in its output:\n{err}"
        assert "Traceback" not in err, f"{what}:\n{err}"


def test_launcher_reports_an_early_exit_and_kills_a_node_that_does_not_stop(model, tmp_path):
    """NodeProcess: wait_ready fails with the log's tail when the node exits; stop() kills a hung node;
    a node that crashes leaves its Python stack in its log."""
    failing = NodeProcess.start(["-r", "__node:=hiseg_launcher_fail"], tmp_path / "fail.log")  # no model_path
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 2 during start-up:.*model_path: required"):
        failing.wait_ready(lambda: False, 60.0, "never get ready")
    assert failing.stop() == 2

    hung = NodeProcess.start(node_process.launch_ros_args(model, CAMERA), tmp_path / "hung.log")
    with hung:
        # once Python handles SIGINT (before that, the default action would end even a stopped process)
        hung.wait_ready(lambda: "loaded model" in hung.log_text(), 60.0, "load the model")
        os.kill(hung.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGINT
        assert hung.stop(timeout=1.0) == -signal.SIGKILL

    crashing = NodeProcess.start(node_process.launch_ros_args(model, CAMERA), tmp_path / "crash.log")
    with crashing:  # a crash in native code leaves the node's Python stack in its log (faulthandler)
        crashing.wait_ready(lambda: "loaded model" in crashing.log_text(), 60.0, "load the model")
        os.kill(crashing.pid, signal.SIGSEGV)
        assert crashing.wait(timeout=30.0) == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in crashing.log_text()


# ---------------------------------------------------------------------------- vehicle day one
def _status(client: Client, fqn: str) -> Any:
    found = _diagnostics(client, fqn)
    return found[-1] if found else None


def test_every_shipped_hierarchy_starts_with_the_shipped_parameters_under_any_name(model, tmp_path):
    """config/hiseg.yaml (keyed /**) reaches a renamed, namespaced node; each hierarchy's own traffic signs."""
    from diagnostic_msgs.msg import DiagnosticArray

    hierarchies = REPO / "config" / "hierarchies"
    models = {"iv2018": model} | {
        name: make_model(tmp_path, hierarchies / f"{name}.yaml") for name in ("iv2019", "iv2018_flat")
    }
    params = tmp_path / "hiseg.yaml"  # the shipped file with one value changed, under the shipped top-level key
    data = yaml.safe_load(PARAMS.read_text())
    (key,) = data
    data[key]["ros__parameters"]["overlay_alpha"] = 0.25
    params.write_text(yaml.safe_dump(data))
    procs = {
        name: NodeProcess.start(
            node_process.launch_ros_args(
                path, f"/day1/{name}/image", params, node_name=f"seg_{name}", namespace=f"veh/{name}"
            ),
            tmp_path / f"{name}.log",
        )
        for name, path in models.items()
    }
    client = Client("hiseg_test_day1")
    try:
        client.subscribe(DiagnosticArray, "/diagnostics")
        for name, proc in procs.items():
            fqn = f"/veh/{name}/seg_{name}"
            proc.wait_ready(lambda fqn=fqn: _status(client, fqn), 90.0, "publish diagnostics")
            got = get_parameters(client, fqn, ["overlay_alpha", "diagnostics.min_frequency", "sign_class"])
            assert got == {"overlay_alpha": 0.25, "diagnostics.min_frequency": 5.0, "sign_class": ""}, name
            topics = dict(client.node.get_publisher_names_and_types_by_node(f"seg_{name}", f"/veh/{name}"))
            assert f"{fqn}/traffic_signs" in topics, (name, sorted(topics))
            assert "traffic signs: the leaves under" in proc.log_text()
    finally:
        client.close()
        codes = {name: proc.stop() for name, proc in procs.items()}
    assert codes == dict.fromkeys(procs, 0), {n: procs[n].log_text()[-2000:] for n in procs}


def test_diagnostics_report_a_dead_camera_and_the_input_rate(model, tmp_path):
    """No input: WARN (stale), then ERROR; frames at the expected rate: OK; far below it: WARN."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    ns, camera = "/hiseg_diag", "/cam_diag/image"
    extra = ["-p", "diagnostics_period:=0.5", "-p", "diagnostics.stale_warn_s:=1.5"]
    extra += ["-p", "diagnostics.stale_error_s:=4.0", "-p", "diagnostics.window_size:=4"]
    extra += ["-p", "diagnostics.min_frequency:=8.0", "-p", "diagnostics.max_frequency:=12.0"]
    extra += ["-p", "outputs:=[mask]"]  # nobody subscribes: frames are counted, not inferred
    args = node_process.launch_ros_args(model, camera, node_name="hiseg_diag", extra=extra)
    proc = NodeProcess.start(args, tmp_path / "node.log")
    client = Client("hiseg_test_diag")
    try:
        client.subscribe(DiagnosticArray, "/diagnostics")

        def level(lvl: int, text: str):
            s = _status(client, ns)
            return s if s is not None and s.level == bytes([lvl]) and text in s.message else None

        warned = wait_until(lambda: level(WARN, "Input stale: no input frame yet"), 90.0)
        assert warned is not None, (_status(client, ns), proc.log_text())
        values = dict((kv.key, kv.value) for kv in warned.values)
        assert values["Minimum acceptable frequency (Hz)"] == "7.200000" and "Events in window" in values
        assert wait_until(lambda: level(ERROR, "Input stale"), 10.0) is not None, _status(client, ns)

        publisher = client.node.create_publisher(Image, camera, 1)
        rgb = np.zeros((16, 16, 3), np.uint8)

        def publish_at(hz: float, seconds: float) -> Any:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                msg = _image_msg(rgb, "rgb8")
                msg.header.stamp = client.node.get_clock().now().to_msg()
                publisher.publish(msg)
                time.sleep(1.0 / hz)
            return _status(client, ns)

        ok = publish_at(10.0, 4.0)
        assert ok.level == bytes([OK]) and ok.message == "ok", ok
        values = dict((kv.key, kv.value) for kv in ok.values)
        assert 7.2 <= float(values["Actual frequency (Hz)"]) <= 13.2
        assert abs(float(values["Latest timestamp delay:"])) < 1.0
        low = publish_at(2.0, 3.0)
        assert low.level == bytes([WARN]) and "Frequency too low." in low.message, low
    finally:
        client.close()
        assert proc.stop() == 0, proc.log_text()
