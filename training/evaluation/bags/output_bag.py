"""The result bag of an evaluation: the input frames plus the node's outputs, written with ``rosbags``.

Outputs are stored under the node's topics (``/segmentation_node/...``) with the input frames'
header stamps and bag times, so ``ros2 bag play`` + RViz (config/hiseg.rviz) shows them in step
with the camera. ``vision_msgs`` comes from :mod:`~training.evaluation.bags.vision_types`; without it
there is no ``traffic_signs`` topic.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.messages import NODE_NAME, DetectionTypes, detection_array, join_stamp, split_stamp, time_msg
from hiseg_ros.outputs import SignDetection

from .read import IMAGE
from .vision_types import DETECTIONS

__all__ = ["OutputBag", "cdr_stamp", "detections_cdr", "output_topics", "restamp_cdr", "restamp_detections"]


def output_topics(hierarchy: Hierarchy, with_signs: bool, node_name: str = NODE_NAME) -> dict[str, str]:
    """The node's output topics (fully qualified) -> message type."""
    ns = f"/{node_name}"
    topics = {f"{ns}/{clf}/mask": IMAGE for clf in hierarchy.classifier_names}
    topics.update({f"{ns}/mask": IMAGE, f"{ns}/colored": IMAGE, f"{ns}/overlay": IMAGE})
    if with_signs:
        topics[f"{ns}/traffic_signs"] = DETECTIONS
    return topics


def cdr_stamp(raw: bytes | memoryview) -> int:
    """Header stamp (ns) of a serialized message whose first field is a std_msgs/Header."""
    order = "<" if raw[1] & 1 else ">"
    return join_stamp(*struct.unpack_from(f"{order}iI", raw, 4))


def restamp_cdr(raw: bytes | memoryview, stamp: int) -> bytes:
    """Copy of a serialized header-first message with its top-level header stamp replaced."""
    out = bytearray(raw)
    order = "<" if out[1] & 1 else ">"
    struct.pack_into(f"{order}iI", out, 4, *split_stamp(stamp))
    return bytes(out)


class OutputBag:
    """rosbags writer of the result bag; connections are added on first use."""

    def __init__(self, path: Path, storage: str, store: Any) -> None:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.store = store
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msgtype: str, timestamp: int, raw: bytes) -> None:
        conn = self.connections.get(topic)
        if conn is None:
            rihs01 = self.store.hash_rihs01(msgtype)  # the type hash ros2 bag record stores (Iron+)
            conn = self.writer.add_connection(topic, msgtype, typestore=self.store, rihs01=rihs01)
            self.connections[topic] = conn
        self.writer.write(conn, int(timestamp), raw)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        self.writer.close()


def detections_cdr(store: Any, signs: Sequence[SignDetection], stamp: int, frame_id: str) -> bytes:
    """Serialized vision_msgs/Detection2DArray exactly as the node publishes it (hiseg_ros.messages)."""
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=time_msg(stamp, t["builtin_interfaces/msg/Time"]), frame_id=frame_id)
    msg = detection_array(signs, header, DetectionTypes.from_store(t))
    return bytes(store.serialize_cdr(msg, DETECTIONS))


def restamp_detections(store: Any, raw: bytes, stamp: int) -> bytes:
    """Detection2DArray with the array's and every detection's header stamp replaced."""
    msg = store.deserialize_cdr(raw, DETECTIONS)
    msg.header.stamp = time_msg(stamp, store.types["builtin_interfaces/msg/Time"])
    for det in msg.detections:
        det.header.stamp = msg.header.stamp
    return bytes(store.serialize_cdr(msg, DETECTIONS))
