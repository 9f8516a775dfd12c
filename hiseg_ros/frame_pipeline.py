"""The node's topics and per-frame work, shared by the plain node and the lifecycle node.

A :class:`FramePipeline` is created on a node once a :class:`~hiseg_ros.segmenter.Segmenter`
exists (the plain node's constructor; the lifecycle node's ``activate``) and destroyed by
:meth:`FramePipeline.close` (``deactivate``; the plain node's shutdown). It owns every publisher,
the latched LabelInfo messages, the diagnostics timer, the inference worker thread and, created
last, the image subscription. Topic names and message contents: ``hiseg_ros.node``'s docstring.

The subscription callback stores the newest message; the worker processes the newest one, and a
message overwritten before the worker took it is counted as dropped. Only outputs with
subscribers are computed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
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

from . import outputs
from .diagnostics import FrameStats, InputLimits
from .engines import PAD_VALUE_RGB, InputShapeError
from .imaging import (
    ImageConversionError,
    compressed_rgb_msg,
    compressed_to_rgb,
    float32_msg,
    image_to_rgb,
    mono8_msg,
    mono16_msg,
    rgb8_msg,
)
from .label_remap import VOID
from .memory import retain_freed_memory
from .messages import DetectionTypes, detection_array, stamp_ns
from .node_params import EXIT_PARAMETER_ERROR, ConfigurationError, input_problem
from .rcl_publish import RawPublish, raw_publish
from .segmenter import Segmenter

__all__ = ["DETECTION_TYPES", "FramePipeline", "qos_profile"]

#: The rclpy classes of ``~/traffic_signs`` (the bag tools build the same message from rosbags classes).
DETECTION_TYPES = DetectionTypes(
    array=Detection2DArray,
    detection=Detection2D,
    hypothesis_with_pose=ObjectHypothesisWithPose,
    hypothesis=ObjectHypothesis,
    bbox=BoundingBox2D,
    pose2d=Pose2D,
    point2d=Point2D,
    pose_with_covariance=PoseWithCovariance,
    pose=Pose,
    point=Point,
    quaternion=Quaternion,
)


def qos_profile(depth: int, reliability: str, transient_local: bool = False) -> QoSProfile:
    """A KEEP_LAST profile from the node's ``*_qos.depth`` / ``*_qos.reliability`` values."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def _copy(qos: QoSProfile) -> QoSProfile:
    return QoSProfile(history=qos.history, depth=qos.depth, reliability=qos.reliability, durability=qos.durability)


class FramePipeline:
    """Publishers, subscription, worker and diagnostics of one node; ``params`` is read on every frame
    (the node's set-parameters callback updates it in place)."""

    def __init__(self, node: Node, seg: Segmenter, params: dict[str, Any]) -> None:
        self._node = node
        self._seg = seg
        self._params = params
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: tuple[Any, float, bool] | None = None
        self._rejected_sizes: set[tuple[int, int]] = set()
        self._publishers: list[Any] = []
        self._raw: dict[Any, RawPublish] = {}  # image publisher -> its publish through rcl
        self._sub: Any = None
        self._timer: Any = None
        self._worker: threading.Thread | None = None
        if params["memory.retain_freed"]:
            why_not = retain_freed_memory()
            if why_not:
                node.get_logger().warning(f"memory.retain_freed: not applied: {why_not}")
        try:
            self._build()
        except BaseException:
            self.stop()  # the worker may already run; the node destroys the entities made so far
            raise

    def _build(self) -> None:
        node, seg, p = self._node, self._seg, self._params
        h = seg.hierarchy

        out_qos = qos_profile(p["output_qos.depth"], p["output_qos.reliability"])
        latched = qos_profile(1, "reliable", transient_local=True)
        wanted = set(p["outputs"])
        self._mask_pubs: dict[str, Any] = {}
        self._clf_colored_pubs: dict[str, Any] = {}
        if "masks" in wanted:
            for clf in h.classifier_names:
                self._mask_pubs[clf] = self._publisher(Image, f"~/{clf}/mask", out_qos)
                self._clf_colored_pubs[clf] = self._publisher(Image, f"~/{clf}/colored", out_qos)
        self._leaf_pub = self._publisher(Image, "~/mask", out_qos) if "mask" in wanted else None
        self._colored_pub = self._publisher(Image, "~/colored", out_qos) if "colored" in wanted else None
        self._overlay_pub = self._publisher(Image, "~/overlay", out_qos) if "overlay" in wanted else None
        self._compressed_pub = None
        if "colored" in wanted:
            self._compressed_pub = self._publisher(CompressedImage, "~/colored/compressed", out_qos)
        self._conf_pub = None
        if seg.engine.has_confidence:
            self._conf_pub = self._publisher(Image, "~/confidence", out_qos)
        else:
            node.get_logger().info(
                f"{p['model_path']} has no confidence output (exported before it existed): no ~/confidence"
            )
        self._signs_pub = None
        if "traffic_signs" in wanted and seg.sign_lut is not None:
            self._signs_pub = self._publisher(Detection2DArray, "~/traffic_signs", out_qos)
        self._remap_pub = self._publisher(Image, "~/remapped/mask", out_qos) if seg.remap is not None else None
        self._publish_label_info(latched)
        self._diag_pub = self._publisher(DiagnosticArray, "/diagnostics", 10)

        limits = InputLimits(
            min_frequency=p["diagnostics.min_frequency"],
            max_frequency=p["diagnostics.max_frequency"],
            tolerance=p["diagnostics.tolerance"],
            window_size=p["diagnostics.window_size"],
            stale_warn_s=p["diagnostics.stale_warn_s"],
            stale_error_s=p["diagnostics.stale_error_s"],
            min_delay_s=p["diagnostics.min_delay_s"],
            max_delay_s=p["diagnostics.max_delay_s"],
        )
        self.stats = FrameStats(hold_s=max(3.0, 3 * p["diagnostics_period"]), limits=limits)
        self._worker = threading.Thread(target=self._work, name="hiseg_inference", daemon=True)
        self._worker.start()
        self._timer = node.create_timer(p["diagnostics_period"], self._publish_diagnostics)

        # Last: the subscription exists only once everything it feeds is ready.
        in_qos = qos_profile(p["input_qos.depth"], p["input_qos.reliability"])
        if p["use_compressed"]:
            topic = node.resolve_topic_name("image") + "/compressed"
            msg_type, callback = CompressedImage, self._on_compressed
        else:
            topic = node.resolve_topic_name("image")
            msg_type, callback = Image, self._on_image
        with _qos_override_errors(topic, "subscription"):
            self._sub = node.create_subscription(
                msg_type, topic, callback, in_qos, qos_overriding_options=QoSOverridingOptions.with_default_policies()
            )
        resize = p["resize.policy"] + ("" if seg.target is None else f" to {seg.target[1]}x{seg.target[0]}")
        node.get_logger().info(f"subscribed to {topic}; publishing {', '.join(sorted(wanted))} (resize {resize})")

    def _publisher(self, msg_type: type, topic: str, qos: QoSProfile | int) -> Any:
        """A publisher whose QoS the standard ``qos_overrides.<topic>.publisher.*`` parameters can change.

        rclpy applies an override by changing the profile it is given, so each publisher gets its own
        copy: one topic's override must not leak into the publishers created after it.
        """
        own = _copy(qos) if isinstance(qos, QoSProfile) else qos
        with _qos_override_errors(self._node.resolve_topic_name(topic), "publisher"):
            pub = self._node.create_publisher(
                msg_type, topic, own, qos_overriding_options=QoSOverridingOptions.with_default_policies()
            )
        self._publishers.append(pub)
        if msg_type is Image:  # the images leave serialized (_send): through rcl where this rclpy allows
            publish, why = raw_publish(pub)
            if publish is None:
                self._node.get_logger().info(f"image outputs published by rclpy: {why}", once=True)
            else:
                self._raw[pub] = publish
        return pub

    def _send(self, pub: Any, data: bytes) -> None:
        """Publish one serialized output image: through rcl from the bytes where they lie
        (:func:`~hiseg_ros.rcl_publish.raw_publish`: one copy fewer, no GIL held), else rclpy's publish."""
        raw = self._raw.get(pub)
        if raw is None:
            pub.publish(data)
        else:
            raw(data)

    def _publish_label_info(self, qos: QoSProfile) -> None:
        h = self._seg.hierarchy
        tables = [(f"~/{clf.name}/label_info", list(enumerate(clf.classes)), 255) for clf in h.classifiers]
        tables.append(("~/label_info", [(leaf.id, leaf.name) for leaf in h.leaves], h.void_value))
        if self._seg.remap is not None:
            tables.append(("~/remapped/label_info", list(self._seg.remap.classes), VOID))
        for topic, classes, void in tables:
            msg = LabelInfo()
            msg.header.stamp = self._node.get_clock().now().to_msg()
            msg.threshold = float(self._params["confidence.threshold"])
            msg.class_map = [VisionClass(class_id=int(i), class_name=n) for i, n in classes]
            msg.class_map.append(VisionClass(class_id=int(void), class_name="unlabeled"))
            self._publisher(LabelInfo, topic, qos).publish(msg)

    # ------------------------------------------------------------------ input
    def _store(self, msg: Any, compressed: bool) -> None:
        delay_s = (self._node.get_clock().now().nanoseconds - stamp_ns(msg.header.stamp)) / 1e9
        with self._lock:
            overwrote = self._pending is not None
            arrival = self.stats.on_received(overwrote, delay_s)
            self._pending = (msg, arrival, compressed)
        self._wake.set()

    def _on_image(self, msg: Image) -> None:
        self._store(msg, False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._store(msg, True)

    # ------------------------------------------------------------------ processing
    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            with self._lock:
                item, self._pending = self._pending, None
                self._wake.clear()
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # keep the node alive; report in diagnostics
                if self._stop.is_set() or not rclpy.ok(context=self._node.context):
                    return
                self.stats.on_error(f"{type(exc).__name__}: {exc}")
                self._node.get_logger().error(
                    f"processing failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )

    @staticmethod
    def _active(pub: Any) -> bool:
        return pub is not None and pub.get_subscription_count() > 0

    def _process(self, msg: Any, arrival: float, compressed: bool) -> None:
        seg, p, log = self._seg, self._params, self._node.get_logger()
        masks = {k: pub for k, pub in self._mask_pubs.items() if self._active(pub)}
        clf_colored = {k: pub for k, pub in self._clf_colored_pubs.items() if self._active(pub)}
        single = {"mask": self._leaf_pub, "colored": self._colored_pub, "overlay": self._overlay_pub}
        single["traffic_signs"] = self._signs_pub
        wanted = {kind for kind, pub in single.items() if self._active(pub)} | ({"masks"} if masks else set())
        remap = seg.remap if self._active(self._remap_pub) else None
        compressed_out = self._active(self._compressed_pub)
        publish_conf = self._active(self._conf_pub)
        if not wanted and not clf_colored and remap is None and not compressed_out and not publish_conf:
            self.stats.on_skipped()
            return
        threshold = p["confidence.threshold"]
        try:
            if compressed:
                rgb = compressed_to_rgb(msg, max_pixels=p["max_input_pixels"])
            else:
                rgb = image_to_rgb(msg, max_pixels=p["max_input_pixels"], mono16_shift=p["mono16_shift"])
        except ImageConversionError as exc:
            self.stats.on_bad_input(str(exc))
            log.warning(f"dropping bad input image: {exc}", throttle_duration_sec=2.0)
            return

        net_in, fit = outputs.fit_input(rgb, seg.target, PAD_VALUE_RGB)
        size = (int(net_in.shape[0]), int(net_in.shape[1]))
        why = input_problem(seg.engine.input_constraints, *size)
        if why:  # a size the engine can never take (a TensorRT profile, a fixed-size model): one error per size
            self.stats.on_error(why)
            if size not in self._rejected_sizes:
                self._rejected_sizes.add(size)
                log.error(why)
            return
        t0 = time.monotonic()
        try:
            decisions = seg.engine.infer(net_in, confidence=publish_conf or threshold > 0.0)
        except InputShapeError as exc:  # what input_problem cannot know (e.g. the engine's own shape check)
            self.stats.on_bad_input(str(exc))
            log.warning(f"dropping input the engine cannot take: {exc}", throttle_duration_sec=2.0)
            return
        inference_s = time.monotonic() - t0
        to_input = p["output.resolution"] == "input"
        per_clf, leaf = outputs.restore_decisions(decisions.per_classifier, decisions.leaf, fit, to_input)
        confidence = None
        if decisions.confidence is not None:
            confidence = outputs.restore_plane(decisions.confidence, fit, to_input)
            if threshold > 0.0:
                leaf = np.where(confidence < threshold, leaf.dtype.type(seg.hierarchy.void_value), leaf)
        image = rgb if to_input else net_in[: fit.scaled_size[0], : fit.scaled_size[1]]
        header = msg.header

        def publish(field: str, value: Any) -> None:  # each output leaves as soon as it is drawn
            if field == "masks":
                for name, pub in masks.items():
                    self._send(pub, mono8_msg(value[name], header, serialized=True))
            elif field == "classifier_colored":
                for name, pub in clf_colored.items():
                    self._send(pub, rgb8_msg(value[name], header, serialized=True))
            elif field == "leaf":
                leaf_msg = mono8_msg if value.dtype == np.uint8 else mono16_msg
                self._send(self._leaf_pub, leaf_msg(value, header, serialized=True))
            elif field == "remapped":
                self._send(self._remap_pub, mono8_msg(value, header, serialized=True))
            elif field == "signs" and "traffic_signs" in wanted:
                self._signs_pub.publish(detection_array(value, header, DETECTION_TYPES))
            elif field == "colored" and "colored" in wanted:  # not when drawn only for ~/colored/compressed
                self._send(self._colored_pub, rgb8_msg(value, header, serialized=True))
            elif field == "overlay":
                self._send(self._overlay_pub, rgb8_msg(value, header, serialized=True))

        if publish_conf and confidence is not None:  # ready already: leaves before the drawn outputs
            self._publish_confidence(confidence, header)
        out = outputs.render(
            seg.hierarchy,
            per_clf,
            leaf,
            image,
            wanted | ({"colored"} if compressed_out else set()),
            sign_lut=seg.sign_lut,
            min_sign_area=p["min_sign_area"],
            sign_split=p["sign_split"],
            overlay_alpha=p["overlay_alpha"],
            colored_classifiers=tuple(clf_colored),
            remap=remap,
            emit=publish,
        )
        if compressed_out:
            fmt, quality = p["output.compressed_format"], p["output.jpeg_quality"]
            self._compressed_pub.publish(compressed_rgb_msg(out.colored, header, fmt, quality))
        self.stats.on_processed(arrival, inference_s)

    def _publish_confidence(self, confidence: np.ndarray, header: Any) -> None:
        if self._params["confidence.encoding"] == "mono8":
            self._send(self._conf_pub, mono8_msg(outputs.confidence_mono8(confidence), header, serialized=True))
        else:
            self._send(self._conf_pub, float32_msg(np.ascontiguousarray(confidence), header, serialized=True))

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        status = DiagnosticStatus(
            level=bytes([snap.level]),
            name=f"{self._node.get_name()}: segmentation",
            hardware_id=self._node.get_fully_qualified_name(),
            message=snap.message[:500],
            values=[KeyValue(key=k, value=v) for k, v in snap.values()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self._node.get_clock().now().to_msg()
        self._diag_pub.publish(arr)

    # ------------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Stop the worker (the frame in progress is finished first); the entities stay."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        self._worker = None

    def close(self) -> None:
        """Stop taking frames, finish the frame in progress, destroy every entity this pipeline made
        (the lifecycle node's deactivate; a node being destroyed only needs :meth:`stop`)."""
        node = self._node
        if self._sub is not None:
            node.destroy_subscription(self._sub)
            self._sub = None
        self.stop()
        if self._timer is not None:
            node.destroy_timer(self._timer)
            self._timer = None
        self._raw.clear()
        for pub in self._publishers:
            node.destroy_publisher(pub)
        self._publishers.clear()


@contextmanager
def _qos_override_errors(topic: str, kind: str) -> Iterator[None]:
    """A bad ``qos_overrides.*`` value (rclpy raises while creating the entity) -> ConfigurationError."""
    try:
        yield
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"qos_overrides.{topic}.{kind}.*: {type(exc).__name__}: {exc}", EXIT_PARAMETER_ERROR
        ) from exc
