"""The node's name, header stamps and its Detection2D mapping, with no ROS import of its own.

Two message flavours carry the same content: the node publishes rclpy messages, and the bag tools
(``training.evaluation.bags``) write the same messages with the pure-Python ``rosbags`` package on
machines without ROS. Both build them here from message classes passed in, so the mapping from
sign instances to ``vision_msgs/Detection2DArray`` and the stamp arithmetic exist once:

- :data:`NODE_NAME`: the node's default name (its output topics live under ``/<NODE_NAME>/``);
- :func:`split_stamp` / :func:`join_stamp` / :func:`stamp_ns` / :func:`time_msg` / :func:`set_stamp`:
  integer nanoseconds <-> ``builtin_interfaces/Time`` (``sec``, ``nanosec``);
- :class:`DetectionTypes` + :func:`detection_array`: sign instances -> ``Detection2DArray``.

Importing this module imports neither rclpy nor any message package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .outputs import SignDetection

__all__ = [
    "NODE_NAME",
    "NS_PER_S",
    "DetectionTypes",
    "detection_array",
    "join_stamp",
    "set_stamp",
    "split_stamp",
    "stamp_ns",
    "time_msg",
]

NODE_NAME = "segmentation_node"
NS_PER_S = 1_000_000_000


def split_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` of a ``builtin_interfaces/Time`` (``0 <= nanosec < 1e9``)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def join_stamp(sec: int, nanosec: int) -> int:
    """``(sec, nanosec)`` -> integer nanoseconds (the inverse of :func:`split_stamp`)."""
    return int(sec) * NS_PER_S + int(nanosec)


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (e.g. ``msg.header.stamp``) of either flavour."""
    return join_stamp(stamp.sec, stamp.nanosec)


def time_msg(ns: int, time_type: type) -> Any:
    """A ``builtin_interfaces/Time`` of class ``time_type`` (rclpy's or a rosbags store's) for ``ns``."""
    sec, nanosec = split_stamp(ns)
    return time_type(sec=sec, nanosec=nanosec)


def set_stamp(header: Any, ns: int) -> None:
    """Set ``header.stamp`` in place to ``ns`` (re-stamping a message before it is published)."""
    header.stamp.sec, header.stamp.nanosec = split_stamp(ns)


@dataclass(frozen=True)
class DetectionTypes:
    """The message classes a ``vision_msgs/Detection2DArray`` is built from, rclpy's or a rosbags store's.

    rosbags classes have no field defaults, so :func:`detection_array` gives every field; rclpy
    classes then get exactly their defaults for the fields the node leaves alone.
    """

    array: type  # vision_msgs/msg/Detection2DArray
    detection: type  # vision_msgs/msg/Detection2D
    hypothesis_with_pose: type  # vision_msgs/msg/ObjectHypothesisWithPose
    hypothesis: type  # vision_msgs/msg/ObjectHypothesis
    bbox: type  # vision_msgs/msg/BoundingBox2D
    pose2d: type  # vision_msgs/msg/Pose2D
    point2d: type  # vision_msgs/msg/Point2D
    pose_with_covariance: type  # geometry_msgs/msg/PoseWithCovariance
    pose: type  # geometry_msgs/msg/Pose
    point: type  # geometry_msgs/msg/Point
    quaternion: type  # geometry_msgs/msg/Quaternion

    @classmethod
    def from_store(cls, types: Mapping[str, type]) -> DetectionTypes:
        """From a name -> class table such as ``rosbags`` ``store.types`` (vision_msgs registered)."""
        missing = [_TYPE_NAMES[f.name] for f in fields(cls) if _TYPE_NAMES[f.name] not in types]
        if missing:
            raise KeyError(f"message types not in the type store: {', '.join(missing)}")
        return cls(**{f.name: types[_TYPE_NAMES[f.name]] for f in fields(cls)})


_TYPE_NAMES = {
    "array": "vision_msgs/msg/Detection2DArray",
    "detection": "vision_msgs/msg/Detection2D",
    "hypothesis_with_pose": "vision_msgs/msg/ObjectHypothesisWithPose",
    "hypothesis": "vision_msgs/msg/ObjectHypothesis",
    "bbox": "vision_msgs/msg/BoundingBox2D",
    "pose2d": "vision_msgs/msg/Pose2D",
    "point2d": "vision_msgs/msg/Point2D",
    "pose_with_covariance": "geometry_msgs/msg/PoseWithCovariance",
    "pose": "geometry_msgs/msg/Pose",
    "point": "geometry_msgs/msg/Point",
    "quaternion": "geometry_msgs/msg/Quaternion",
}


def detection_array(signs: Sequence[SignDetection], header: Any, types: DetectionTypes) -> Any:
    """The node's ``~/traffic_signs`` message for ``signs``, every detection with ``header``.

    Per sign instance one Detection2D: ``id`` empty (vision_msgs uses it to identify one object
    across messages, and the node does not track signs from frame to frame), the box centre and size in
    pixels, one hypothesis with ``class_id`` = the majority leaf's name and ``score`` = its fraction
    of the region (pose: identity, covariance zero).
    """
    t = types
    detections = []
    for sign in signs:
        cx, cy = sign.center
        pose = t.pose_with_covariance(
            pose=t.pose(position=t.point(x=0.0, y=0.0, z=0.0), orientation=t.quaternion(x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, dtype=np.float64),
        )
        hypothesis = t.hypothesis_with_pose(
            hypothesis=t.hypothesis(class_id=sign.class_name, score=float(sign.score)), pose=pose
        )
        bbox = t.bbox(
            center=t.pose2d(position=t.point2d(x=float(cx), y=float(cy)), theta=0.0),
            size_x=float(sign.width),
            size_y=float(sign.height),
        )
        detections.append(t.detection(header=header, results=[hypothesis], bbox=bbox, id=""))
    return t.array(header=header, detections=detections)
