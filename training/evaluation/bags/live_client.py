"""The live evaluation's side of DDS: publishes the camera topic, receives every output of the node.

Outputs are received serialized (``raw=True``), each put on the run's event queue as
``("out", topic, raw bytes, arrival time.time_ns())`` by the spin thread, so matching them to the
published frames costs no deserialisation; the node's own counters come from ``/diagnostics``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from hiseg_ros.messages import NODE_NAME, set_stamp

from .ros_client import RosClient
from .vision_types import DETECTIONS


class LiveClient(RosClient):
    """A ``hiseg_bag_player`` node: camera publisher, raw output subscriptions, the node's diagnostics."""

    def __init__(self, camera_topic: str, compressed: bool, topics: Mapping[str, str], events: queue.Queue) -> None:
        super().__init__("hiseg_bag_player")
        self.msg_class = CompressedImage if compressed else Image
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(self.msg_class, camera_topic, qos)
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.subs: dict[str, Any] = {}
        for topic, msgtype in topics.items():
            cls = Detection2DArray if msgtype == DETECTIONS else Image

            def callback(raw: bytes, topic: str = topic) -> None:
                events.put(("out", topic, raw, time.time_ns()))

            self.subs[topic] = self.node.create_subscription(cls, topic, callback, out_qos, raw=True)
        self.node_diagnostics: dict[str, str] | None = None  # the node's last /diagnostics values
        self.diagnostics_time = 0.0  # time.monotonic() of that message
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.hardware_id == f"/{NODE_NAME}":
                self.node_diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_time = time.monotonic()

    def camera_matched(self) -> bool:
        """The node subscribes to the camera topic."""
        return self.pub.get_subscription_count() >= 1

    def unmatched_outputs(self) -> list[str]:
        """Output topics nobody publishes yet."""
        return [t for t, s in self.subs.items() if s.get_publisher_count() < 1]

    def drop_output(self, topic: str) -> None:
        self.node.destroy_subscription(self.subs.pop(topic))

    def publish(self, msg: Any, stamp: int) -> None:
        """Publish ``msg`` (of ``msg_class``) re-stamped to ``stamp`` (ns)."""
        set_stamp(msg.header, stamp)
        self.pub.publish(msg)
