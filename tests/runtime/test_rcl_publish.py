"""hiseg_ros.rcl_publish: serialized messages published through rcl from bytes, bytearrays and numpy
buffers reach a real subscriber over loopback DDS byte for byte; what it cannot send in place, a
destroyed publisher and an rclpy without the rcl pointer are clear errors or a stated fallback."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from node_helpers import Client, wait_until
from rclpy.exceptions import InvalidHandle
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from hiseg_ros.image_wire import serialize_image
from hiseg_ros.rcl_publish import raw_publish

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture()
def pair():
    """A publisher and a subscriber that records raw (serialized) messages, in one client."""
    client = Client("rcl_publish_test")
    got: list[bytes] = []
    lock = threading.Lock()

    def on_raw(data: bytes) -> None:
        with lock:
            got.append(bytes(data))

    client.node.create_subscription(Image, "raw_probe", on_raw, RELIABLE, raw=True)
    pub = client.node.create_publisher(Image, "raw_probe", RELIABLE)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 10.0)

    def received() -> list[bytes]:
        with lock:
            return list(got)

    yield client, pub, received
    client.close()


def _frame(i: int, shape: tuple[int, ...] = (48, 64, 3)) -> bytes:
    header = Header(frame_id=f"cam_{i}")
    header.stamp.sec = i
    return serialize_image(np.full(shape, i, np.uint8), header, "rgb8", 0)


def test_every_buffer_kind_arrives_byte_for_byte(pair) -> None:
    _, pub, received = pair
    publish, why = raw_publish(pub)
    assert why is None and publish is not None
    frames = [_frame(i) for i in range(3)]
    publish(frames[0])  # bytes: published where they lie
    publish(bytearray(frames[1]))
    publish(np.frombuffer(frames[2], np.uint8).copy())  # a writable numpy buffer
    assert wait_until(lambda: len(received()) == 3, 10.0)
    assert received() == frames
    msg = deserialize_message(received()[2], Image)
    assert (msg.header.frame_id, msg.width, msg.height, bytes(msg.data)[:3]) == ("cam_2", 64, 48, b"\x02\x02\x02")


def test_refuses_what_it_cannot_send_in_place(pair) -> None:
    _, pub, _ = pair
    publish, _ = raw_publish(pub)
    strided = np.frombuffer(_frame(0) * 2, np.uint8).copy()[::2]
    with pytest.raises(ValueError, match="writable C-contiguous buffer, got ndarray"):
        publish(strided)
    with pytest.raises(ValueError, match="got memoryview"):
        publish(memoryview(_frame(0)))  # read-only and not bytes


def test_a_destroyed_publisher_is_an_error_not_a_crash(pair) -> None:
    client, pub, _ = pair
    publish, _ = raw_publish(pub)
    client.node.destroy_publisher(pub)
    with pytest.raises(InvalidHandle, match="destruction was requested"):
        publish(_frame(0))


def test_without_an_rcl_pointer_it_says_why() -> None:
    """Another rclpy build whose publisher handle has no ``pointer``: the caller gets the reason and
    keeps rclpy's own publish (the node logs it once)."""

    class Handle:  # what such a build would hand out
        pass

    class Publisher:
        handle = Handle()

    publish, why = raw_publish(Publisher())
    assert publish is None and why == "Handle has no integer 'pointer' (the rcl_publisher_t address)"
