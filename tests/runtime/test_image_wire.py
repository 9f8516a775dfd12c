"""hiseg_ros.image_wire: the node's output images in serialized form, checked against rclpy's own
(de)serialization of the same ``sensor_msgs/Image``: every field, the total length, zero padding.

Frame ids of every length modulo 4 (and non-ASCII ones) move the alignment of every later field;
odd widths and padded rows (``step`` > ``width * bytes``) are not special cases of the layout but
are checked anyway. No DDS traffic here: the node tests receive these bytes over loopback DDS.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from hiseg_ros.image_wire import serialize_image
from hiseg_ros.imaging import float32_msg, mono8_msg, mono16_msg, rgb8_msg

BUILDERS = {
    "mono8": (mono8_msg, np.uint8, ()),
    "mono16": (mono16_msg, np.uint16, ()),
    "rgb8": (rgb8_msg, np.uint8, (3,)),
    "32FC1": (float32_msg, np.float32, ()),
}
FIELDS = ("height", "width", "encoding", "is_bigendian", "step")


def _header(frame_id: str, sec: int = 1_700_000_123, nanosec: int = 987_654_321) -> Header:
    header = Header()
    header.frame_id = frame_id
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _array(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    _, dtype, extra = BUILDERS[kind]
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random((h, w, *extra), dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, (h, w, *extra), dtype=dtype)


def assert_same_message(raw: bytes, msg: Image) -> None:
    """``raw`` decodes to ``msg``, and is exactly as long as rclpy's serialization of ``msg``."""
    got = deserialize_message(raw, Image)
    assert got.header.frame_id == msg.header.frame_id
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
    for field in FIELDS:
        assert getattr(got, field) == getattr(msg, field), field
    assert bytes(got.data) == bytes(msg.data)
    assert len(raw) == len(serialize_message(msg))


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "camera", "front_left_camera_optical", "kamera_ü"])
def test_serialized_builders_match_rclpy(kind: str, frame_id: str) -> None:
    builder = BUILDERS[kind][0]
    arr = _array(kind, 5, 7)
    header = _header(frame_id)
    raw = builder(arr, header, serialized=True)
    assert isinstance(raw, bytes)
    assert_same_message(raw, builder(arr, header))


def test_padding_is_zero_and_layout_is_plain_cdr_le() -> None:
    """The bytes rclpy leaves undefined (alignment padding) are zeros here: output is reproducible."""
    raw = mono8_msg(np.arange(6, dtype=np.uint8).reshape(2, 3), _header("cam", 5, 7), serialized=True)
    expected = bytes.fromhex(
        "00010000 05000000 07000000 04000000 63616d00 02000000 03000000"
        " 06000000 6d6f6e6f3800 00 00 03000000 06000000 000102030405"
    )
    assert raw == expected


def test_no_header_and_strided_input() -> None:
    """``header=None`` is stamp 0 / empty frame; a non-contiguous view is copied, not misread."""
    base = _array("rgb8", 6, 10)
    view = base[1:5, 2:9]  # rows padded in memory: not C-contiguous
    raw = rgb8_msg(view, None, serialized=True)
    msg = deserialize_message(raw, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (0, 0, "")
    assert (msg.height, msg.width, msg.step) == (4, 7, 21)
    assert np.array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(4, 7, 3), view)
    with pytest.raises(ValueError, match="C-contiguous"):
        serialize_image(view, None, "rgb8", 0)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(sorted(BUILDERS)),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    frame_id=st.text(max_size=12).filter(lambda s: "\x00" not in s),
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 999_999_999),
)
def test_any_header_and_size_round_trips(kind, h, w, frame_id, sec, nanosec) -> None:
    builder = BUILDERS[kind][0]
    arr = _array(kind, h, w, seed=h * 10 + w)
    header = _header(frame_id, sec, nanosec)
    assert_same_message(builder(arr, header, serialized=True), builder(arr, header))
