"""The result bag of an evaluation: the input frames plus the node's outputs, written with ``rosbags``.

Outputs are stored under the node's topics (``/segmentation_node/...``) with the input frames'
header stamps and bag times, so ``ros2 bag play`` + RViz (config/hiseg.rviz) shows them in step
with the camera. ``vision_msgs`` is not in the rosbags Kilted store: its definitions are read from
the installed package's ``.msg`` files, and without them there is no ``traffic_signs`` topic.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.messages import NODE_NAME, DetectionTypes, detection_array, join_stamp, split_stamp, time_msg
from hiseg_ros.outputs import SignDetection

from .read import IMAGE

DETECTIONS = "vision_msgs/msg/Detection2DArray"


def _vision_msg_dir() -> Path | None:
    try:  # ament_index finds an installed ROS package; without it, look in this environment's share/
        from ament_index_python.packages import get_package_share_directory

        candidates = [Path(get_package_share_directory("vision_msgs")) / "msg"]
    except Exception:  # ament_index missing, or the package not registered
        candidates = []
    candidates.append(Path(sys.prefix) / "share" / "vision_msgs" / "msg")
    return next((c for c in candidates if (c / "Detection2DArray.msg").is_file()), None)


def output_typestore() -> tuple[Any, bool]:
    """The Kilted type store plus vision_msgs (from its .msg files) when installed; (store, has_vision)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = _vision_msg_dir()
    if folder is None:
        return store, False
    types: dict[str, Any] = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store, DETECTIONS in store.fielddefs


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
