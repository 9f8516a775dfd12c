"""hiseg_ros.messages: header stamps and the Detection2D mapping, here with rosbags message classes
(the rclpy flavour is compared with them in tests/integration/test_vision_msgs_fixture.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hiseg_ros import messages
from hiseg_ros.outputs import SignDetection
from training.evaluation.bags.vision_types import DETECTIONS, output_typestore


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789])
def test_stamp_round_trip(ns):
    sec, nanosec = messages.split_stamp(ns)
    assert 0 <= nanosec < messages.NS_PER_S and sec * 10**9 + nanosec == ns
    assert messages.join_stamp(sec, nanosec) == ns


def test_stamp_on_messages_of_a_rosbags_store():
    store, _ = output_typestore()
    t = store.types
    stamp = messages.time_msg(1_700_000_000_000_000_042, t["builtin_interfaces/msg/Time"])
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 42)
    header = t["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")
    assert messages.stamp_ns(header.stamp) == 1_700_000_000_000_000_042
    messages.set_stamp(header, 5 * 10**9 + 7)
    assert (header.stamp.sec, header.stamp.nanosec) == (5, 7)


SIGNS = [
    SignDetection(x=50, y=30, width=20, height=21, area=399, leaf_id=40, class_name="sign-stop", score=1.0),
    SignDetection(x=10, y=5, width=12, height=10, area=120, leaf_id=31, class_name="sign-30", score=0.8333),
]


def test_detection_array_from_rosbags_classes_round_trips_through_cdr():
    store, has_vision = output_typestore()
    if not has_vision:
        pytest.skip("vision_msgs .msg files are not installed")
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=messages.time_msg(123, t["builtin_interfaces/msg/Time"]), frame_id="c")
    msg = messages.detection_array(SIGNS, header, messages.DetectionTypes.from_store(t))
    back = store.deserialize_cdr(bytes(store.serialize_cdr(msg, DETECTIONS)), DETECTIONS)
    assert messages.stamp_ns(back.header.stamp) == 123 and back.header.frame_id == "c"
    got = [
        (
            d.id,
            d.header.frame_id,
            d.bbox.center.position.x,
            d.bbox.center.position.y,
            d.bbox.size_x,
            d.bbox.size_y,
            d.results[0].hypothesis.class_id,
            d.results[0].hypothesis.score,
            d.results[0].pose.pose.orientation.w,
        )
        for d in back.detections
    ]
    assert got == [
        ("", "c", 60.0, 40.5, 20.0, 21.0, "sign-stop", 1.0, 1.0),
        ("", "c", 16.0, 10.0, 12.0, 10.0, "sign-30", 0.8333, 1.0),
    ]  # id stays empty: vision_msgs uses it for an object's identity across messages (no tracking here)
    assert all(np.all(d.results[0].pose.covariance == 0) for d in back.detections)
    assert messages.detection_array([], header, messages.DetectionTypes.from_store(t)).detections == []


def test_detection_types_name_the_missing_message_types():
    with pytest.raises(KeyError, match="vision_msgs/msg/Detection2DArray.*geometry_msgs/msg/Quaternion"):
        messages.DetectionTypes.from_store({})
