"""Streaming reader of camera frames (+ ground truth) from rosbag2 bags (sqlite3 or mcap).

Works on bags written by the ROS 2 tools (``ros2 bag record``) and by ``rosbags`` (e.g.
:mod:`training.evaluation.bags.write`): the ``rosbags`` package reads both storage formats without a ROS
installation. Camera messages are ``sensor_msgs/msg/Image`` (any encoding
``hiseg_ros.imaging.raw_to_rgb`` reads) or ``sensor_msgs/msg/CompressedImage`` (jpeg / png; when the
camera topic itself is not in the bag, ``<camera topic>/compressed`` is used, the image_transport
naming). Ground truth is a label-id image per frame (``mono8`` / ``8UC1``, ``mono16`` / ``16UC1``, or a
png ``CompressedImage``) on a second topic, paired with the camera frame of the SAME header stamp;
traffic-sign ground truth (``vision_msgs/msg/Detection2DArray``, :mod:`training.evaluation.bags.sign_truth`)
on a third, paired the same way, when the bag has it (a bag without it reads as before).

Memory stays flat: messages are read one by one, and at most ``max_pending`` camera frames wait for
their ground truth (a frame still without it after that many later frames is yielded without
label / signs). Every problem is a :class:`BagError` whose message names the bag and the topic.
"""

from __future__ import annotations

import sqlite3
import struct
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, get_typestore

from hiseg_ros import messages
from hiseg_ros.imaging import ImageConversionError, decode_compressed, raw_to_rgb
from hiseg_ros.outputs import SignDetection

from .sign_truth import decode_signs
from .vision_types import DETECTIONS, vision_typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
DEFAULT_CAMERA_TOPIC = "/camera/image_raw"
DEFAULT_LABEL_TOPIC = "/camera/labels"
DEFAULT_SIGN_TOPIC = "/camera/traffic_signs_gt"
LABEL_ENCODINGS = {"mono8": np.uint8, "8uc1": np.uint8, "mono16": np.uint16, "16uc1": np.uint16}


class BagError(RuntimeError):
    """A bag cannot be read as asked; the message starts with ``bag <path>, topic <topic>:``."""

    def __init__(self, bag: Path | str, topic: str | None, problem: str) -> None:
        where = f"bag {bag}" + (f", topic {topic}" if topic else "")
        super().__init__(f"{where}: {problem}")
        self.bag = Path(bag)
        self.topic = topic
        self.problem = problem


@cache
def typestore() -> Any:
    """The ``rosbags`` type store of ROS 2 Kilted (sensor_msgs, std_msgs, ... message definitions)."""
    return get_typestore(Stores.ROS2_KILTED)


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ReaderError, sqlite3.Error, OSError, struct.error, EOFError, ValueError]
    try:
        from rosbags.rosbag2.storage_mcap import McapError  # type: ignore[attr-defined]

        errors.append(McapError)
    except ImportError:
        pass
    return tuple(errors)


@dataclass
class BagInfo:
    """What a bag holds for the camera / label topics."""

    path: Path
    storage: str
    camera_topic: str
    camera_msgtype: str
    label_topic: str | None  # None when the bag has no ground truth
    frame_count: int
    label_count: int
    start_ns: int
    duration_ns: int
    topics: dict[str, str] = field(default_factory=dict)  # every topic -> msgtype
    sign_topic: str | None = None  # None when the bag has no (readable) sign ground truth
    sign_count: int = 0

    @property
    def compressed(self) -> bool:
        return self.camera_msgtype == COMPRESSED

    @property
    def rate_hz(self) -> float | None:
        """Mean recorded camera rate from the bag's time span (None for fewer than two frames)."""
        if self.frame_count < 2 or self.duration_ns <= 0:
            return None
        return (self.frame_count - 1) * messages.NS_PER_S / self.duration_ns


@dataclass
class BagFrame:
    """One camera frame, decoded, with its ground truth when the bag has one of the same stamp."""

    index: int  # 0-based, in bag order
    stamp_ns: int  # header stamp
    bag_time_ns: int  # the bag's receive timestamp
    frame_id: str
    rgb: np.ndarray | None  # H x W x 3 uint8 (None when read with decode=False)
    label: np.ndarray | None  # H x W label ids, None without ground truth for this stamp
    camera_raw: bytes  # the serialized (CDR) camera message as stored in the bag
    camera_msgtype: str
    label_raw: bytes | None = None
    label_bag_time_ns: int | None = None
    signs: list[SignDetection] | None = None  # true signs, None without sign ground truth for this stamp
    signs_raw: bytes | None = None
    signs_bag_time_ns: int | None = None


@dataclass
class ReadStats:
    frames: int = 0
    with_label: int = 0
    without_label: int = 0
    orphan_labels: int = 0  # label messages no camera frame had the stamp of
    with_signs: int = 0
    orphan_signs: int = 0  # sign ground-truth messages no camera frame had the stamp of


def _open_reader(bag: Path, topic: str) -> Any:
    if not bag.exists():
        raise BagError(bag, topic, "does not exist")
    try:
        reader = Reader(bag)
        reader.open()
    except _read_errors() as exc:
        raise BagError(bag, topic, f"cannot open the bag (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    return reader


def _topic_types(reader: Any) -> dict[str, str]:
    return {c.topic: c.msgtype for c in reader.connections}


def _storage(reader: Any, bag: Path) -> str:
    paths = [Path(p) for p in getattr(reader, "paths", [])] or list(bag.glob("*"))
    return "mcap" if any(p.suffix == ".mcap" for p in paths) else "sqlite3"


def _resolve_sign_topic(bag: Path, topics: dict[str, str], sign_topic: str | None) -> str | None:
    """The sign ground-truth topic when the bag has it and vision_msgs can read it."""
    if not sign_topic or sign_topic not in topics:
        return None
    if topics[sign_topic] != DETECTIONS:
        raise BagError(bag, sign_topic, f"has type {topics[sign_topic]}, expected {DETECTIONS} sign ground truth")
    return sign_topic if vision_typestore()[1] else None


def _resolve_topics(bag: Path, reader: Any, camera_topic: str, label_topic: str | None, require_labels: bool):
    topics = _topic_types(reader)
    listing = ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items())) or "none"
    cam = camera_topic
    if cam not in topics and f"{cam}/compressed" in topics:
        cam = f"{cam}/compressed"
    if cam not in topics:
        raise BagError(bag, camera_topic, f"camera topic not in the bag (topics: {listing})")
    if topics[cam] not in (IMAGE, COMPRESSED):
        raise BagError(bag, cam, f"has type {topics[cam]}, expected {IMAGE} or {COMPRESSED}")
    lab = label_topic or None
    if lab is not None and lab not in topics:
        if require_labels:
            raise BagError(bag, lab, f"ground-truth topic not in the bag (topics: {listing})")
        lab = None
    if lab is not None and topics[lab] not in (IMAGE, COMPRESSED):
        raise BagError(bag, lab, f"has type {topics[lab]}, expected {IMAGE} or {COMPRESSED} label images")
    return cam, lab, topics


def open_bag_info(
    bag: Path | str,
    camera_topic: str = DEFAULT_CAMERA_TOPIC,
    label_topic: str | None = DEFAULT_LABEL_TOPIC,
    require_labels: bool = False,
    *,
    sign_topic: str | None = DEFAULT_SIGN_TOPIC,
) -> BagInfo:
    """Check the bag and its topics (cheap: metadata only). A missing label topic gives
    ``label_topic=None`` unless ``require_labels``; a missing sign topic ``sign_topic=None``."""
    bag = Path(bag)
    reader = _open_reader(bag, camera_topic)
    try:
        cam, lab, topics = _resolve_topics(bag, reader, camera_topic, label_topic, require_labels)
        signs = _resolve_sign_topic(bag, topics, sign_topic)
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return BagInfo(
            path=bag,
            storage=_storage(reader, bag),
            camera_topic=cam,
            camera_msgtype=topics[cam],
            label_topic=lab,
            frame_count=counts.get(cam, 0),
            label_count=counts.get(lab, 0) if lab else 0,
            start_ns=int(reader.start_time) if counts.get(cam) else 0,
            duration_ns=max(0, int(reader.duration) - 1) if counts.get(cam) else 0,  # rosbags: end - start + 1
            topics=topics,
            sign_topic=signs,
            sign_count=counts.get(signs, 0) if signs else 0,
        )
    finally:
        reader.close()


def stamp_ns(msg: Any) -> int:
    """Header stamp (ns) of a deserialized message."""
    return messages.stamp_ns(msg.header.stamp)


def decode_camera(msg: Any, msgtype: str) -> np.ndarray:
    """``HxWx3`` uint8 RGB of a deserialized (rosbags) Image / CompressedImage; ImageConversionError."""
    if msgtype == COMPRESSED:
        return decode_compressed(np.asarray(msg.data, dtype=np.uint8).tobytes(), msg.format)
    return raw_to_rgb(
        np.asarray(msg.data, dtype=np.uint8), msg.height, msg.width, msg.step, msg.encoding, msg.is_bigendian
    )


def decode_label(msg: Any, msgtype: str) -> np.ndarray:
    """``HxW`` label ids (uint8 / uint16) of a label image; ImageConversionError when unreadable."""
    data = np.asarray(msg.data, dtype=np.uint8)
    if msgtype == COMPRESSED:
        if "png" not in msg.format.lower():
            raise ImageConversionError(f"format: label images must be lossless png, got {msg.format!r}")
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise ImageConversionError("data: not a single-channel png label image")
        return label
    encoding = msg.encoding.strip().lower()
    if encoding not in LABEL_ENCODINGS:
        raise ImageConversionError(
            f"encoding: label image encoding {msg.encoding!r} is not one of {', '.join(LABEL_ENCODINGS)}"
        )
    dtype = np.dtype(LABEL_ENCODINGS[encoding])
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1 or step < w * dtype.itemsize or data.size < h * step:
        raise ImageConversionError(f"height/width/step: {w}x{h}, step {step}, {data.size} data bytes do not fit")
    rows = data[: h * step].reshape(h, step)[:, : w * dtype.itemsize]
    if dtype.itemsize == 1:
        return np.ascontiguousarray(rows)
    order = ">" if msg.is_bigendian else "<"
    return np.ascontiguousarray(rows).view(np.dtype(np.uint16).newbyteorder(order)).astype(np.uint16)


class FrameReader:
    """Iterate over a bag's camera frames (:class:`BagFrame`), paired with ground truth by stamp.

    ``stats`` counts frames with / without ground truth and labels without frame. ``decode=False``
    skips image decoding (``rgb`` None; labels and signs are still decoded).
    """

    def __init__(
        self,
        bag: Path | str,
        camera_topic: str = DEFAULT_CAMERA_TOPIC,
        label_topic: str | None = DEFAULT_LABEL_TOPIC,
        *,
        require_labels: bool = False,
        sign_topic: str | None = DEFAULT_SIGN_TOPIC,
        decode: bool = True,
        max_pending: int = 64,
    ) -> None:
        self.info = open_bag_info(bag, camera_topic, label_topic, require_labels, sign_topic=sign_topic)
        self.bag = self.info.path
        self.decode = decode
        self.max_pending = max(1, max_pending)
        self.stats = ReadStats()

    def __len__(self) -> int:
        return self.info.frame_count

    def _deserialize(self, raw: bytes, msgtype: str, topic: str, n: int) -> Any:
        try:
            store = vision_typestore()[0] if msgtype == DETECTIONS else typestore()
            return store.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # truncated / corrupt message data
            raise BagError(
                self.bag, topic, f"message {n} cannot be deserialized as {msgtype}: {type(exc).__name__}: {exc}"
            ) from exc

    def _frame(self, item: tuple, truth: dict[str, tuple]) -> BagFrame:
        info = self.info
        n, stamp, t, msg, raw = item
        label = truth.get(info.label_topic) if info.label_topic else None
        signs = truth.get(info.sign_topic) if info.sign_topic else None
        rgb = None
        if self.decode:
            try:
                rgb = decode_camera(msg, info.camera_msgtype)
            except ImageConversionError as exc:
                raise BagError(
                    self.bag, info.camera_topic, f"message {n} (stamp {stamp}): cannot read image: {exc}"
                ) from exc
        lab = lab_raw = lab_t = None
        if label is not None:
            lab_n, lab_t, lab_msg, lab_raw = label
            try:
                lab = decode_label(lab_msg, info.topics[info.label_topic])
            except ImageConversionError as exc:
                raise BagError(
                    self.bag, info.label_topic, f"message {lab_n} (stamp {stamp}): cannot read label image: {exc}"
                ) from exc
            shape = rgb.shape[:2] if rgb is not None else None
            if shape is None and info.camera_msgtype == IMAGE:
                shape = (int(msg.height), int(msg.width))
            if shape is not None and lab.shape != shape:
                raise BagError(
                    self.bag,
                    info.label_topic,
                    f"message {lab_n} (stamp {stamp}): label is {lab.shape[1]}x{lab.shape[0]}, "
                    f"the camera image {shape[1]}x{shape[0]}",
                )
        return BagFrame(
            index=self.stats.frames,
            stamp_ns=stamp,
            bag_time_ns=t,
            frame_id=str(msg.header.frame_id),
            rgb=rgb,
            label=lab,
            camera_raw=bytes(raw),
            camera_msgtype=info.camera_msgtype,
            label_raw=None if lab_raw is None else bytes(lab_raw),
            label_bag_time_ns=lab_t,
            signs=None if signs is None else decode_signs(signs[2]),
            signs_raw=None if signs is None else bytes(signs[3]),
            signs_bag_time_ns=None if signs is None else signs[1],
        )

    def _emit(self, item: tuple, truth: dict[str, tuple]) -> BagFrame:
        frame = self._frame(item, truth)
        self.stats.frames += 1
        if frame.label is None:
            self.stats.without_label += 1
        else:
            self.stats.with_label += 1
        self.stats.with_signs += frame.signs is not None
        return frame

    def __iter__(self) -> Iterator[BagFrame]:
        info = self.info
        cam_topic = info.camera_topic
        truth_topics = [t for t in (info.label_topic, info.sign_topic) if t is not None]
        reader = _open_reader(self.bag, cam_topic)
        pending: deque[list] = deque()  # [camera item, {truth topic: message}] waiting, in bag order
        waiting: dict[str, OrderedDict[int, tuple]] = {t: OrderedDict() for t in truth_topics}  # before their frame
        counts = {cam_topic: 0, **{t: 0 for t in truth_topics}}
        current = cam_topic
        try:
            conns = [c for c in reader.connections if c.topic in counts]
            messages = reader.messages(connections=conns)
            while True:
                current = cam_topic
                try:
                    conn, t, raw = next(messages)
                except StopIteration:
                    break
                except _read_errors() as exc:
                    raise BagError(
                        self.bag,
                        current,
                        f"corrupt or truncated bag after {counts[cam_topic]} camera messages: "
                        f"{type(exc).__name__}: {exc}",
                    ) from exc
                topic = conn.topic
                current = topic
                n = counts[topic]
                counts[topic] = n + 1
                if topic == cam_topic:
                    msg = self._deserialize(raw, info.camera_msgtype, topic, n)
                    stamp = stamp_ns(msg)
                    found = {tt: w.pop(stamp) for tt, w in waiting.items() if stamp in w}
                    if len(found) == len(truth_topics) and not pending:
                        yield self._emit((n, stamp, t, msg, raw), found)
                        continue
                    pending.append([(n, stamp, t, msg, raw), found])
                else:
                    msg = self._deserialize(raw, info.topics[topic], topic, n)
                    stamp = stamp_ns(msg)
                    for entry in pending:
                        if topic not in entry[1] and entry[0][1] == stamp:
                            entry[1][topic] = (n, t, msg, raw)
                            break
                    else:
                        held = waiting[topic]
                        held[stamp] = (n, t, msg, raw)
                        while len(held) > 2 * self.max_pending:
                            held.popitem(last=False)
                            self._orphan(topic, 1)
                # release complete frames from the head; incomplete ones once too many wait
                while pending and (len(pending[0][1]) == len(truth_topics) or len(pending) > self.max_pending):
                    item, found = pending.popleft()
                    yield self._emit(item, found)
            while pending:
                item, found = pending.popleft()
                yield self._emit(item, found)
            for topic, held in waiting.items():
                self._orphan(topic, len(held))
        except BagError:
            raise
        except _read_errors() as exc:
            raise BagError(self.bag, current, f"corrupt or truncated bag: {type(exc).__name__}: {exc}") from exc
        finally:
            reader.close()

    def _orphan(self, topic: str, count: int) -> None:
        if topic == self.info.sign_topic:
            self.stats.orphan_signs += count
        else:
            self.stats.orphan_labels += count


def iter_frames(
    bag: Path | str,
    camera_topic: str = DEFAULT_CAMERA_TOPIC,
    label_topic: str | None = DEFAULT_LABEL_TOPIC,
    **kwargs: Any,
) -> Iterator[BagFrame]:
    """Shorthand for ``iter(FrameReader(bag, camera_topic, label_topic, **kwargs))``."""
    return iter(FrameReader(bag, camera_topic, label_topic, **kwargs))
