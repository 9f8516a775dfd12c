"""``sensor_msgs/Image`` in its serialized ROS 2 form (CDR), written straight from a numpy array.

Why: ``Publisher.publish(msg)`` copies an image three times before DDS sees it: the pixels into
``msg.data``, the Python message into its C struct, the C struct into CDR. A publisher also
accepts the serialized form (``Publisher.publish(bytes)``, handed to ``rcl`` as it is, the way
rosbag2 replays messages), so building that form here costs one copy of the pixels. The node's
per-frame output images (five or more megabytes per frame) leave this way.

The layout is the ROS 2 wire format every RMW reads (rosbag2 stores it): a 4-byte encapsulation
header (``00 01 00 00``: plain CDR, little endian), then the fields in message order, each
aligned to its own size counted from the byte after that header; strings as a ``uint32`` length
that includes the terminating NUL, the bytes, the NUL; ``uint8[]`` as a ``uint32`` count and the
bytes. Padding is written as zeros. ``tests/runtime/test_image_wire.py`` checks every field
against rclpy's own ``deserialize_message`` / ``serialize_message``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = ["serialize_image"]

_ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR_LE, options 0


def serialize_image(arr: np.ndarray, header: Any, encoding: str, is_bigendian: int) -> bytes:
    """The serialized ``sensor_msgs/Image`` of the C-contiguous 2-D or 3-D array ``arr``.

    ``height`` / ``width`` are the first two dimensions, ``step`` the row stride; ``header`` is a
    ``std_msgs/Header`` (or ``None``: stamp 0, empty frame id). The pixels are copied once.
    """
    if not arr.flags.c_contiguous:
        raise ValueError("serialize_image needs a C-contiguous array")
    if header is None:
        sec, nanosec, frame_id = 0, 0, ""
    else:
        sec, nanosec, frame_id = int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)
    body = bytearray()  # everything after the encapsulation header, against which CDR aligns

    def align(size: int) -> None:
        body.extend(bytes(-len(body) % size))

    def string(text: str) -> None:
        raw = text.encode("utf-8") + b"\x00"
        align(4)
        body.extend(struct.pack("<I", len(raw)) + raw)

    body.extend(struct.pack("<iI", sec, nanosec))  # header.stamp
    string(frame_id)  # header.frame_id
    align(4)
    body.extend(struct.pack("<II", arr.shape[0], arr.shape[1]))  # height, width
    string(encoding)
    body.append(is_bigendian & 0xFF)
    align(4)
    body.extend(struct.pack("<II", arr.strides[0], arr.nbytes))  # step, the length of data
    return b"".join((_ENCAPSULATION, body, arr.reshape(-1).view(np.uint8)))
