"""The node's optional outputs over loopback DDS: label remap, confidence (and its threshold), network
resolution, the compressed colour image, and rclpy's standard QoS override parameters.

Two nodes run side by side in their own processes. ``feat``: the exported model with its confidence
output, the shipped driving16 remap table, confidence as 32FC1 with a threshold, PNG compression,
QoS overrides on the image subscription and on ``~/mask``. ``net``: a model exported without the
confidence output (as before it existed), resize policy fit with output resolution network, JPEG.
What they publish is compared with the engine + hiseg_ros.outputs run here on the same image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from node_helpers import Client, get_parameters, reference_engine, wait_until

from hiseg_ros import outputs
from hiseg_ros.engines import PAD_VALUE_RGB
from hiseg_ros.label_remap import VOID, load_label_remap
from training import REPO
from training.evaluation.bags import node_process
from training.evaluation.bags.node_process import NodeProcess

pytestmark = pytest.mark.ros

DRIVING16 = REPO / "config" / "label_remaps" / "driving16.yaml"
FEAT, NET = "/hiseg_feat", "/hiseg_net"
CAM_FEAT, CAM_NET = "/feat/image", "/net/image"
RGB = np.random.default_rng(21).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def _without_confidence(model: Path, out: Path) -> Path:
    """``model`` as exported before the confidence output existed: the same graph without that output
    (and the nodes only it needs) and without the ``hiseg.confidence_output`` metadata key. (A real
    ``--no-confidence`` export is tested in tests/runtime/test_engines.py; this avoids a second export.)"""
    import onnx
    from onnx.utils import Extractor

    proto = onnx.load(model)
    keep = [o.name for o in proto.graph.output if o.name != "confidence"]
    assert len(keep) == len(proto.graph.output) - 1
    old = Extractor(proto).extract_model([i.name for i in proto.graph.input], keep)
    props = {p.key: p.value for p in proto.metadata_props if p.key != "hiseg.confidence_output"}
    onnx.helper.set_model_props(old, props)
    old.ir_version = proto.ir_version  # the exporter's, which ONNX Runtime reads
    onnx.save(old, out)
    return out


@pytest.fixture(scope="module")
def models(exported_model, tmp_path_factory) -> dict[str, Path]:
    old = _without_confidence(exported_model, tmp_path_factory.mktemp("old_model") / "noconf.onnx")
    return {"conf": exported_model, "old": old}


@pytest.fixture(scope="module")
def threshold(models) -> float:
    """Just above the median confidence of RGB: at least half of its pixels become unlabeled. (The
    random-init network is uncertain everywhere alike, its root classifier's 1/53 for iv2018, so
    there every pixel does; tests/runtime/test_confidence.py checks varied maps by hand.)"""
    decisions = reference_engine(models["conf"]).infer(RGB, confidence=True)
    return float(np.ceil(np.median(decisions.confidence) * 1e4 + 1) / 1e4)


@pytest.fixture(scope="module")
def nodes(models, threshold, tmp_path_factory):
    logs = tmp_path_factory.mktemp("extra")
    feat = ["-p", f"label_remap_path:={DRIVING16}", "-p", "confidence.encoding:=32FC1"]
    feat += ["-p", f"confidence.threshold:={threshold}", "-p", "output.compressed_format:=png"]
    feat += ["-p", f"qos_overrides.{CAM_FEAT}.subscription.reliability:=reliable"]
    feat += ["-p", f"qos_overrides.{FEAT}/mask.publisher.reliability:=best_effort"]
    net = ["-p", "resize.policy:=fit", "-p", "resize.width:=64", "-p", "resize.height:=64"]
    net += ["-p", "output.resolution:=network", "-p", "output.jpeg_quality:=95"]
    procs = {
        "feat": NodeProcess.start(
            node_process.launch_ros_args(models["conf"], CAM_FEAT, node_name="hiseg_feat", extra=feat), logs / "f.log"
        ),
        "net": NodeProcess.start(
            node_process.launch_ros_args(models["old"], CAM_NET, node_name="hiseg_net", extra=net), logs / "n.log"
        ),
    }
    client = Client("hiseg_test_extra")
    try:
        for name, proc in procs.items():
            proc.wait_ready(lambda n=name: f"hiseg_{n}" in client.node.get_node_names(), 120.0, "appear")
        yield procs, client
    finally:
        client.close()
        codes = {name: proc.stop() for name, proc in procs.items()}
        assert codes == {"feat": 0, "net": 0}, {n: p.log_text()[-3000:] for n, p in procs.items()}


def _image_msg(rgb: np.ndarray) -> Any:
    from sensor_msgs.msg import Image

    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
    msg.data = rgb.tobytes()
    msg.header.frame_id = "cam"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000 + time.monotonic_ns() % 1_000_000, 7
    return msg


def _collect(client: Client, camera: str, topics: dict[str, type], qos: Any = 10) -> dict[str, Any]:
    """Subscribe to ``topics``, publish one image until each delivered a message with its stamp."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    for topic, msg_type in topics.items():
        if topic not in client.received:
            client.subscribe(msg_type, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    publisher = client.node.create_publisher(Image, camera, qos)
    msg = _image_msg(RGB)

    def matching(topic: str) -> Any:
        return next((m for m in reversed(client.messages(topic)) if m.header.stamp == msg.header.stamp), None)

    got = wait_until(
        lambda: all(matching(t) for t in topics) and {t: matching(t) for t in topics},
        45.0,
        action=lambda: publisher.publish(msg),
    )
    assert got, f"no output with the frame's stamp on {[t for t in topics if not matching(t)]}"
    return got


def _plane(msg: Any) -> np.ndarray:
    dtype = {"mono8": np.uint8, "rgb8": np.uint8, "32FC1": np.float32}[msg.encoding]
    channels = 3 if msg.encoding == "rgb8" else 1
    arr = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, -1)[:, : msg.width * channels]
    return arr.reshape(msg.height, msg.width, 3) if channels == 3 else arr


def _latched(client: Client, topics: list[str]) -> dict[str, Any]:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import LabelInfo

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for topic in topics:
        client.subscribe(LabelInfo, topic, qos)
    assert wait_until(lambda: all(client.messages(t) for t in topics), 30.0), "label_info missing"
    return {t: client.messages(t)[-1] for t in topics}


def test_remap_confidence_threshold_and_compressed_png(nodes, models, threshold):
    from sensor_msgs.msg import CompressedImage, Image

    _, client = nodes
    engine = reference_engine(models["conf"])
    h = engine.hierarchy
    topics = {f"{FEAT}/{t}": Image for t in ("mask", "remapped/mask", "confidence", "root/mask")}
    topics[f"{FEAT}/colored/compressed"] = CompressedImage
    got = _collect(client, CAM_FEAT, topics)

    decisions = engine.infer(RGB, confidence=True)
    low = decisions.confidence < threshold
    assert low.mean() >= 0.5  # the threshold really unlabels pixels
    leaf = np.where(low, h.void_value, decisions.leaf).astype(decisions.leaf.dtype)
    confidence = got[f"{FEAT}/confidence"]
    assert confidence.encoding == "32FC1" and (confidence.height, confidence.width) == RGB.shape[:2]
    np.testing.assert_allclose(_plane(confidence), decisions.confidence, atol=1e-5)
    np.testing.assert_array_equal(_plane(got[f"{FEAT}/mask"]), leaf)
    masks = outputs.classifier_masks(h, decisions.per_classifier, leaf)
    np.testing.assert_array_equal(_plane(got[f"{FEAT}/root/mask"]), masks["root"])
    remap = load_label_remap(DRIVING16, h)
    remapped = _plane(got[f"{FEAT}/remapped/mask"])
    np.testing.assert_array_equal(remapped, remap.lut[leaf])
    assert (remapped[low] == VOID).all()

    png = got[f"{FEAT}/colored/compressed"]
    assert png.format == "rgb8; png compressed bgr8"
    decoded = cv2.imdecode(np.frombuffer(bytes(png.data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(decoded, outputs.colorize(h, leaf))  # PNG is lossless

    infos = _latched(client, [f"{FEAT}/remapped/label_info", f"{FEAT}/label_info", f"{FEAT}/root/label_info"])
    remap_info = infos[f"{FEAT}/remapped/label_info"]
    pairs = [(c.class_id, c.class_name) for c in remap_info.class_map]
    assert pairs == [*remap.classes, (VOID, "unlabeled")] and pairs[0] == (0, "road")
    assert [info.threshold for info in infos.values()] == pytest.approx([threshold] * 3, rel=1e-5)  # float32


def test_standard_qos_overrides_change_the_qos_in_use(nodes):
    from rclpy.qos import ReliabilityPolicy

    _, client = nodes
    names = [f"qos_overrides.{CAM_FEAT}.subscription.reliability", f"qos_overrides.{FEAT}/mask.publisher.reliability"]
    assert list(get_parameters(client, FEAT, names).values()) == ["reliable", "best_effort"]

    def endpoint(infos: list[Any], node: str) -> Any:
        return next((i for i in infos if i.node_name == node), None)

    sub = wait_until(lambda: endpoint(client.node.get_subscriptions_info_by_topic(CAM_FEAT), "hiseg_feat"), 20.0)
    assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # the node's own default: best_effort
    net_sub = wait_until(lambda: endpoint(client.node.get_subscriptions_info_by_topic(CAM_NET), "hiseg_net"), 20.0)
    assert net_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # sensor-data default
    mask = wait_until(lambda: endpoint(client.node.get_publishers_info_by_topic(f"{FEAT}/mask"), "hiseg_feat"), 20.0)
    assert mask.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # output default: reliable
    colored = wait_until(
        lambda: endpoint(client.node.get_publishers_info_by_topic(f"{FEAT}/colored"), "hiseg_feat"), 20.0
    )
    assert colored.qos_profile.reliability == ReliabilityPolicy.RELIABLE


def test_old_model_network_resolution_and_jpeg(nodes, models):
    from sensor_msgs.msg import CompressedImage, Image

    _, client = nodes
    topics = dict(client.node.get_publisher_names_and_types_by_node("hiseg_net", "/"))
    assert f"{NET}/mask" in topics and f"{NET}/confidence" not in topics  # no confidence output in the model
    wanted = {f"{NET}/{t}": Image for t in ("mask", "overlay", "root/mask")}
    wanted[f"{NET}/colored/compressed"] = CompressedImage
    got = _collect(client, CAM_NET, wanted)

    engine = reference_engine(models["old"])
    assert not engine.has_confidence and engine.infer(RGB, confidence=True).confidence is None
    h = engine.hierarchy
    net_in, fit = outputs.fit_input(RGB, (64, 64), PAD_VALUE_RGB)
    assert fit.scaled_size == (38, 64)  # 48x80 fitted into 64x64: the padding rows are cropped, not scaled back
    decisions = engine.infer(net_in)
    per, leaf = outputs.restore_decisions(decisions.per_classifier, decisions.leaf, fit, to_input=False)
    for topic in wanted:
        msg = got[topic]
        assert msg.header.stamp == got[f"{NET}/mask"].header.stamp and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(_plane(got[f"{NET}/mask"]), leaf)
    np.testing.assert_array_equal(_plane(got[f"{NET}/root/mask"]), outputs.classifier_masks(h, per, leaf)["root"])
    colored = outputs.colorize(h, leaf)
    content = net_in[:38, :64]
    signs = outputs.find_signs(h, leaf, outputs.sign_leaf_lut(h), 16)
    expected_overlay = outputs.overlay(content, colored, 0.5, signs, h.palette)
    assert _plane(got[f"{NET}/overlay"]).shape == (38, 64, 3)
    jpeg = got[f"{NET}/colored/compressed"]
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    decoded = cv2.imdecode(np.frombuffer(bytes(jpeg.data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert decoded.shape == colored.shape
    assert np.abs(decoded.astype(int) - colored).mean() < 12  # lossy, quality 95
    np.testing.assert_array_equal(_plane(got[f"{NET}/overlay"]), expected_overlay)


def test_bad_remap_table_threshold_without_confidence_and_bad_qos_override_stop_start_up(models, tmp_path):
    bad_table = tmp_path / "bad.yaml"
    bad_table.write_text(DRIVING16.read_text().replace("  sidewalk: sidewalk", "  sidewalkk: sidewalk"))
    cases = {
        "bad table": (models["conf"], ["-p", f"label_remap_path:={bad_table}"], f"{bad_table}: map.sidewalkk"),
        "missing table": (models["conf"], ["-p", f"label_remap_path:={tmp_path / 'none.yaml'}"], "none.yaml"),
        "threshold, old model": (models["old"], ["-p", "confidence.threshold:=0.5"], "confidence.threshold: 0.5"),
        "qos override": (
            models["conf"],
            ["-p", "qos_overrides./bad/image.subscription.reliability:=sometimes", "-r", "image:=/bad/image"],
            "qos_overrides./bad/image.subscription",
        ),
    }
    procs = {
        what: NodeProcess.start(
            ["-r", f"__node:=hiseg_extra_fail_{i}", "-p", f"model_path:={model}", *args], tmp_path / f"{i}.log"
        )
        for i, (what, (model, args, _)) in enumerate(cases.items())
    }
    for what, (_, _, text) in cases.items():
        proc = procs[what]
        try:
            code = proc.wait(timeout=180)
        except Exception:
            proc.stop()
            raise
        log = proc.log_text()
        assert code == 2, f"{what}: exit {code}\n{log}"
        assert text in log and "Traceback" not in log, f"{what}:\n{log}"
