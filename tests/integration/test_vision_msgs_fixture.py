"""The vision_msgs test fixture (tests/fixtures/vision_msgs) is wire-identical to the real one.

The fixture is built into the venv by ``scripts/build_test_interfaces.sh VENV``. These tests check
that its field layout and RIHS01 type hashes equal the published ros-perception/vision_msgs 4.x
ones, that messages survive rclpy serialization, and that two processes exchange a
Detection2DArray over loopback-only DDS.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

try:
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        LabelInfo,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
        VisionClass,
    )
except ImportError as exc:  # pragma: no cover - environment problem, reported clearly
    pytest.fail(
        f"vision_msgs is not importable ({exc}); build the test fixture with "
        "`scripts/build_test_interfaces.sh .venv` and `source scripts/ros_env.sh`",
        pytrace=False,
    )

from rclpy.serialization import deserialize_message, serialize_message

from hiseg_ros import messages
from hiseg_ros.node import DETECTION_TYPES
from hiseg_ros.outputs import SignDetection
from training import REPO
from training.evaluation.bags.node_process import ensure_loopback_env
from training.evaluation.bags.output_bag import detections_cdr
from training.evaluation.bags.vision_types import output_typestore

ROOT = REPO

# Field layout of ros-perception/vision_msgs 4.x (ROS 2 Humble .. Kilted), as rclpy reports it.
EXPECTED_FIELDS = {
    Point2D: {"x": "double", "y": "double"},
    Pose2D: {"position": "vision_msgs/Point2D", "theta": "double"},
    BoundingBox2D: {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    ObjectHypothesis: {"class_id": "string", "score": "double"},
    ObjectHypothesisWithPose: {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    Detection2D: {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox2D",
        "id": "string",
    },
    Detection2DArray: {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    VisionClass: {"class_id": "uint16", "class_name": "string"},
    LabelInfo: {
        "header": "std_msgs/Header",
        "class_map": "sequence<vision_msgs/VisionClass>",
        "threshold": "float",
    },
}

# RIHS01 type hashes of the real vision_msgs, as found in code generated from the upstream package
# (rosidl_generator_c *__description.c of vision_msgs:msg/Detection2DArray.idl, LabelInfo.idl and
# VisionClass.idl). Comments and default values do not enter the hash; names and types do.
UPSTREAM_TYPE_HASHES = {
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
}


def _detection_array() -> Detection2DArray:
    msg = Detection2DArray()
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec = 1_700_000_123
    msg.header.stamp.nanosec = 456_789
    for i, (cls, score) in enumerate([("car", 0.9), ("person", 0.25)]):
        det = Detection2D()
        det.header = msg.header
        det.id = f"track-{i}"
        det.bbox.center.position.x = 100.5 + i
        det.bbox.center.position.y = 42.25
        det.bbox.center.theta = 0.1 * i
        det.bbox.size_x = 30.0
        det.bbox.size_y = 60.0 + i
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = cls
        hyp.hypothesis.score = score
        hyp.pose.pose.position.x = 1.5
        hyp.pose.covariance[0] = 0.01 * (i + 1)
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def _label_info() -> LabelInfo:
    msg = LabelInfo(threshold=0.5)
    msg.header.frame_id = "camera_optical"
    msg.class_map = [
        VisionClass(class_id=0, class_name="road"),
        VisionClass(class_id=13, class_name="car"),
        VisionClass(class_id=65535, class_name="unlabeled"),
    ]
    return msg


# --- layout and hashes -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(EXPECTED_FIELDS), ids=lambda c: c.__name__)
def test_field_layout_matches_vision_msgs_4(cls):
    assert cls.get_fields_and_field_types() == EXPECTED_FIELDS[cls]


def test_type_hashes_match_upstream_vision_msgs():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("vision_msgs"))
    got = {}
    for name in UPSTREAM_TYPE_HASHES:
        desc = json.loads((share / "msg" / f"{name}.json").read_text())
        top = desc["type_hashes"][0]
        assert top["type_name"] == f"vision_msgs/msg/{name}"
        got[name] = top["hash_string"]
    assert got == UPSTREAM_TYPE_HASHES


def test_fixture_is_marked_as_fixture():
    # A real vision_msgs must never be mistaken for the fixture (the build script checks this marker).
    from ament_index_python.packages import get_package_share_directory

    xml = (Path(get_package_share_directory("vision_msgs")) / "package.xml").read_text()
    assert "hiseg_ros TEST FIXTURE" in xml
    assert (ROOT / "tests" / "fixtures" / "vision_msgs" / "COLCON_IGNORE").is_file()


# --- serialization -------------------------------------------------------------------------------


def test_detection2d_array_round_trip():
    msg = _detection_array()
    raw = serialize_message(msg)
    back = deserialize_message(raw, Detection2DArray)
    assert back == msg
    assert back.detections[1].results[0].hypothesis.class_id == "person"
    assert back.detections[0].results[0].pose.covariance[0] == pytest.approx(0.01)


def test_label_info_round_trip():
    msg = _label_info()
    back = deserialize_message(serialize_message(msg), LabelInfo)
    assert back == msg
    assert back.class_map[2].class_id == 65535


def test_point2d_cdr_bytes():
    # XCDR1 little-endian encapsulation header, then two float64.
    raw = serialize_message(Point2D(x=1.0, y=2.0))
    assert raw == b"\x00\x01\x00\x00" + struct.pack("<dd", 1.0, 2.0)


UPSTREAM_MSG_DEFS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "\n".join(
        ["std_msgs/Header header", "vision_msgs/VisionClass[] class_map", "float32 threshold", ""]
    ),
}


def test_independent_cdr_and_hash_from_rosbags():
    """rosbags' own CDR serializer and RIHS01 hasher, fed the upstream field list, agree."""
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    types = {}
    for name, text in UPSTREAM_MSG_DEFS.items():
        types.update(typesys.get_types_from_msg(text, name))
    store.register(types)

    for name, expected in UPSTREAM_TYPE_HASHES.items():
        assert store.hash_rihs01(f"vision_msgs/msg/{name}") == expected, name

    msg = _detection_array()
    raw = bytes(serialize_message(msg))
    theirs = store.deserialize_cdr(raw, "vision_msgs/msg/Detection2DArray")
    assert theirs.header.frame_id == "camera_optical"
    assert [d.results[0].hypothesis.class_id for d in theirs.detections] == ["car", "person"]
    assert theirs.detections[1].bbox.size_y == 61.0
    # Byte-for-byte equality is not expected: Fast CDR leaves alignment padding uninitialised.
    ours = bytes(store.serialize_cdr(theirs, "vision_msgs/msg/Detection2DArray"))
    assert len(ours) == len(raw)
    assert deserialize_message(ours, Detection2DArray) == msg

    label = _label_info()
    raw = bytes(serialize_message(label))
    theirs = store.deserialize_cdr(raw, "vision_msgs/msg/LabelInfo")
    assert [c.class_name for c in theirs.class_map] == ["road", "car", "unlabeled"]
    ours = bytes(store.serialize_cdr(theirs, "vision_msgs/msg/LabelInfo"))
    assert len(ours) == len(raw)
    assert deserialize_message(ours, LabelInfo) == label


# --- the node's Detection2D mapping, in both flavours ---------------------------------------------
SIGNS = [
    SignDetection(x=50, y=30, width=20, height=21, area=399, leaf_id=40, class_name="sign-stop", score=1.0),
    SignDetection(x=10, y=5, width=12, height=10, area=120, leaf_id=31, class_name="sign-30", score=0.75),
]


def _detections_as_the_node_built_them(header) -> Detection2DArray:
    """Field by field on default-constructed rclpy messages, as the node did before the shared mapping."""
    out = Detection2DArray(header=header)
    for sign in SIGNS:
        det = Detection2D(header=header)  # id empty: no identity across frames
        det.bbox.center.position.x, det.bbox.center.position.y = sign.center
        det.bbox.size_x, det.bbox.size_y = float(sign.width), float(sign.height)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = sign.class_name, sign.score
        det.results.append(hyp)
        out.detections.append(det)
    return out


def test_detection_mapping_gives_the_same_message_for_rclpy_and_rosbags():
    from std_msgs.msg import Header

    stamp = 1_700_000_000_000_000_123
    header = Header(frame_id="cam")
    messages.set_stamp(header, stamp)
    node_msg = messages.detection_array(SIGNS, header, DETECTION_TYPES)
    assert node_msg == _detections_as_the_node_built_them(header)
    assert [d.id for d in node_msg.detections] == ["", ""]
    store, has_vision = output_typestore()
    assert has_vision, "vision_msgs .msg files not found for rosbags"
    bag_raw = detections_cdr(store, SIGNS, stamp, "cam")  # what the bag tools write
    assert deserialize_message(bag_raw, Detection2DArray) == node_msg
    assert messages.stamp_ns(deserialize_message(bag_raw, Detection2DArray).header.stamp) == stamp


# --- two processes over loopback DDS -------------------------------------------------------------

_PEER = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    role, topic, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
    rclpy.init()
    node = Node(f"hiseg_fixture_{role}")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    if role == "pub":
        pub = node.create_publisher(Detection2DArray, topic, qos)
        msg = Detection2DArray()
        msg.header.frame_id = "cam"
        det = Detection2D(id="d0")
        det.bbox.center.position.x = 12.5
        det.bbox.size_x = 4.0
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = "car"
        hyp.hypothesis.score = 0.75
        det.results.append(hyp)
        msg.detections.append(det)
        sent = 0
        # Publish at ~20 Hz while a subscriber is matched; stop once it has left again (it exits
        # after its first message), after 100 messages, or at the deadline.
        while time.monotonic() < deadline and sent < 100:
            if pub.get_subscription_count() > 0:
                msg.header.stamp.sec = sent
                pub.publish(msg)
                sent += 1
            elif sent:
                break
            rclpy.spin_once(node, timeout_sec=0.05)
        print(json.dumps({"sent": sent}), flush=True)
    else:
        got = []
        node.create_subscription(Detection2DArray, topic, got.append, qos)
        while time.monotonic() < deadline and not got:
            rclpy.spin_once(node, timeout_sec=0.1)
        infos = node.get_publishers_info_by_topic(topic)
        out = {"received": len(got), "pub_hashes": [str(i.topic_type_hash) for i in infos]}
        if got:
            d = got[0].detections[0]
            out.update(
                frame_id=got[0].header.frame_id, id=d.id, x=d.bbox.center.position.x,
                size_x=d.bbox.size_x, class_id=d.results[0].hypothesis.class_id,
                score=d.results[0].hypothesis.score,
            )
        print(json.dumps(out), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def _loopback_env() -> dict[str, str]:
    """Child environment that keeps every DDS byte on loopback: scripts/ros_env.sh's settings."""
    ensure_loopback_env()
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    return dict(os.environ)


@pytest.mark.ros
@pytest.mark.slow
def test_detection2d_array_between_two_processes():
    assert (ROOT / "config" / "dds" / "fastdds_loopback.xml").is_file()
    topic = f"/hiseg_test/detections_{uuid.uuid4().hex[:8]}"
    env = _loopback_env()
    budget = 30.0
    sub = subprocess.Popen(
        [sys.executable, "-c", _PEER, "sub", topic, str(budget)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pub = subprocess.Popen(
        [sys.executable, "-c", _PEER, "pub", topic, str(budget)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs = {}
    try:
        for name, proc in (("sub", sub), ("pub", pub)):
            out, err = proc.communicate(timeout=budget + 30)
            assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{err}"
            outputs[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in (sub, pub):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    got = outputs["sub"]
    assert got["received"] >= 1, f"no Detection2DArray received; publisher sent {outputs['pub']}"
    assert got["frame_id"] == "cam"
    assert got["id"] == "d0"
    assert got["x"] == 12.5
    assert got["size_x"] == 4.0
    assert got["class_id"] == "car"
    assert got["score"] == 0.75
    # The publisher announced the upstream vision_msgs type hash on the wire.
    assert got["pub_hashes"] == [UPSTREAM_TYPE_HASHES["Detection2DArray"]]
