"""The segmentation node: camera images in, hierarchical segmentation outputs out.

``segmentation_node`` (console script) / ``python -m hiseg_ros.node``. The node holds no ML logic:
the engine (``hiseg_ros.engines``) turns an RGB image into per-classifier decisions and the leaf
map, ``hiseg_ros.outputs.render`` turns those into masks, colours, overlay and sign instances,
``hiseg_ros.messages`` maps the sign instances to Detection2D, and this module wires them to ROS.
The parameters (table, checks, parameter file) live in ``hiseg_ros.node_params``.

Topics (relative names; remap ``image`` to the camera topic):

- in: ``image`` (sensor_msgs/Image), or ``<resolved image>/compressed`` (sensor_msgs/CompressedImage)
  when ``use_compressed`` is true (the image_transport naming).
- out, all with the input header, at input resolution:
  ``~/<classifier>/mask`` (mono8 class indices, 255 outside the parent class; ``~/root/mask`` for
  the root classifier) and ``~/<classifier>/colored`` (rgb8: each class in its colour, black outside
  the parent class; what RViz shows), ``~/mask`` (leaf ids, mono8, or mono16 when the hierarchy has
  leaf ids above 254), ``~/colored`` (rgb8), ``~/overlay`` (rgb8), ``~/traffic_signs``
  (vision_msgs/Detection2DArray: one Detection2D per sign instance, ``id`` empty (no tracking
  across frames), ``results[0].hypothesis.class_id`` = the LEAF NAME of the majority class, e.g.
  ``sign-speed-limit-30``, ``score`` = the majority fraction; the sign classes are those the
  hierarchy declares ``traffic_sign: true``, or ``sign_class``);
  ``~/<classifier>/label_info`` and ``~/label_info`` (vision_msgs/LabelInfo, transient local,
  published once: class index / leaf id -> class name, plus 255 (or 65535) ``unlabeled``);
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` seconds: counters,
  input frequency, stale input, header-stamp delay, latency; ``hiseg_ros.diagnostics``).

Only outputs with subscribers are computed. The subscription callback stores the newest message;
a worker thread processes the newest one, and a message overwritten before the worker took it is
counted as dropped. The model is loaded before the subscription is created. An image size the
engine can never take (outside a TensorRT profile, or a fixed-size model) is one error, logged
once per size and held in /diagnostics, naming the parameters that fix it. Exit codes: 0 after
SIGINT / SIGTERM, 1 when the model / hierarchy cannot be loaded, 2 for invalid parameters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
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
from .engines import PAD_VALUE_RGB, InputShapeError, ShapeProfile, create_engine
from .hierarchy import HierarchyError, load_hierarchy
from .imaging import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    mono8_msg,
    mono16_msg,
    rgb8_msg,
)
from .messages import NODE_NAME, DetectionTypes, detection_array, stamp_ns
from .node_params import (
    EXIT_MODEL_ERROR,
    EXIT_PARAMETER_ERROR,
    PARAMETERS,
    SPEC,
    ConfigurationError,
    Param,
    check_value,
    input_problem,
    problems,
    shape_profile,
)

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


_PTYPE = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_STRING_ARRAY,
}


def _descriptor(p: Param) -> ParameterDescriptor:
    desc = p.description + (f" ({'|'.join(p.choices)})" if p.choices else "")
    d = ParameterDescriptor(
        description=desc, type=_PTYPE[type(p.default)], read_only=not p.dynamic, dynamic_typing=False
    )
    if p.int_range:
        d.integer_range = [IntegerRange(from_value=p.int_range[0], to_value=p.int_range[1], step=0)]
    if p.float_range:
        d.floating_point_range = [FloatingPointRange(from_value=p.float_range[0], to_value=p.float_range[1], step=0.0)]
    return d


def _qos(depth: int, reliability: str, transient_local: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def load_engine(p: dict[str, Any], profile: ShapeProfile | None) -> tuple[Any, str]:
    """``hiseg_ros.engines.create_engine`` with the node's parameters ``p``; ConfigurationError on failure."""
    model_path, backend = p["model_path"], p["backend"]
    if not os.path.isfile(model_path):
        raise ConfigurationError(f"model_path: {model_path!r} does not exist or is not a file", EXIT_MODEL_ERROR)
    try:
        return create_engine(
            model_path,
            backend=backend,
            precision=p["precision"],
            cache_dir=p["engine_cache_dir"] or None,
            calibration_dir=p["int8_calibration_dir"] or None,
            spin_wait=p["cpu_spin_wait"],
            profile=profile,
            device=p["device"],
        )
    except Exception as exc:  # ModelLoadError, EngineSelectionError and whatever a corrupt file makes a backend raise
        raise ConfigurationError(
            f"cannot load model {model_path!r} with backend {backend!r} on device {p['device']!r}: "
            f"{type(exc).__name__}: {exc}",
            EXIT_MODEL_ERROR,
        ) from exc


class SegmentationNode(Node):
    """See the module docstring. Raises :class:`ConfigurationError` from the constructor."""

    def __init__(self, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._setup()
        except BaseException:
            # A constructor that fails after Node.__init__ must not leave the rcl node behind:
            # an undestroyed node can keep rclpy's shutdown (and so the process exit) waiting.
            self.destroy_node()
            raise

    def _setup(self) -> None:
        """Parameters, engine, publishers, subscription: everything after the rcl node exists."""
        self._params = self._declare_and_validate()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = self._params

        t0 = time.monotonic()
        profile = shape_profile(p)
        self.engine, reason = load_engine(p, profile)
        load_s = time.monotonic() - t0
        self.hierarchy = self.engine.hierarchy
        self._check_hierarchy(p["hierarchy_path"])
        h = self.hierarchy
        backend_name = getattr(self.engine, "name", type(self.engine).__name__)
        self.get_logger().info(
            f"loaded model {p['model_path']} (hierarchy {h.name!r}: classifiers "
            f"{', '.join(f'{n}[{c}]' for n, c in h.classifier_sizes)}, {len(h.leaves)} leaves) "
            f"with backend {backend_name} ({reason}) in {load_s:.2f} s"
        )
        self._sign_lut = self._sign_classes(p["sign_class"])
        self._target = (p["resize.height"], p["resize.width"]) if p["resize.policy"] == "fit" else None
        self._rejected_sizes: set[tuple[int, int]] = set()
        expected = self._target or ((p["camera.height"], p["camera.width"]) if p["camera.height"] else None)
        why = input_problem(self.engine.input_constraints, *expected) if expected else None
        if why:
            raise ConfigurationError(f"camera.width / camera.height / resize: {why}", EXIT_PARAMETER_ERROR)

        out_qos = _qos(p["output_qos.depth"], p["output_qos.reliability"])
        latched = _qos(1, "reliable", transient_local=True)
        wanted = set(p["outputs"])
        self._mask_pubs: dict[str, Any] = {}
        self._clf_colored_pubs: dict[str, Any] = {}
        if "masks" in wanted:
            for clf in h.classifier_names:
                self._mask_pubs[clf] = self.create_publisher(Image, f"~/{clf}/mask", out_qos)
                self._clf_colored_pubs[clf] = self.create_publisher(Image, f"~/{clf}/colored", out_qos)
        self._leaf_pub = self.create_publisher(Image, "~/mask", out_qos) if "mask" in wanted else None
        self._colored_pub = self.create_publisher(Image, "~/colored", out_qos) if "colored" in wanted else None
        self._overlay_pub = self.create_publisher(Image, "~/overlay", out_qos) if "overlay" in wanted else None
        self._signs_pub = None
        if "traffic_signs" in wanted and self._sign_lut is not None:
            self._signs_pub = self.create_publisher(Detection2DArray, "~/traffic_signs", out_qos)
        self._label_pubs: list[Any] = []
        self._publish_label_info(latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

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
        self._lock = threading.Lock()
        self._pending: tuple[Any, float, bool] | None = None
        self._worker = threading.Thread(target=self._work, name="hiseg_inference", daemon=True)
        self._worker.start()
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)

        # Last: the subscription exists only once everything it feeds is ready.
        in_qos = _qos(p["input_qos.depth"], p["input_qos.reliability"])
        if p["use_compressed"]:
            topic = self.resolve_topic_name("image") + "/compressed"
            self._sub = self.create_subscription(CompressedImage, topic, self._on_compressed, in_qos)
        else:
            topic = self.resolve_topic_name("image")
            self._sub = self.create_subscription(Image, "image", self._on_image, in_qos)
        self.get_logger().info(
            f"subscribed to {topic}; publishing {', '.join(sorted(wanted))} "
            f"(resize {p['resize.policy']}{'' if self._target is None else f' to {self._target[1]}x{self._target[0]}'})"
        )

    # ------------------------------------------------------------------ set-up
    def _declare_and_validate(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors = []
        for p in PARAMETERS:
            try:
                param = self.declare_parameter(p.name, p.default, _descriptor(p))
            except Exception as exc:  # wrong type / out of range override from the command line or YAML
                errors.append(f"{p.name}: {type(exc).__name__}: {exc}")
                continue
            values[p.name] = param.value
        errors += problems(values)
        if errors:
            raise ConfigurationError("invalid parameters:\n  " + "\n  ".join(errors), EXIT_PARAMETER_ERROR)
        return values

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for param in params:
            p = SPEC.get(param.name)
            if p is not None and p.dynamic:
                why = check_value(p, param.value)
                if why:
                    return SetParametersResult(successful=False, reason=why)
        for param in params:
            if param.name in self._params:
                self._params[param.name] = param.value
        return SetParametersResult(successful=True)

    def _sign_classes(self, override: str) -> Any:
        """The sign LUT: the hierarchy's ``traffic_sign: true`` classes, or ``sign_class`` when given."""
        h = self.hierarchy
        if not override and not h.traffic_sign_classes:
            self.get_logger().info(
                f"hierarchy {h.name!r} declares no traffic_sign class and sign_class is '': no ~/traffic_signs"
            )
            return None
        try:
            lut = outputs.sign_leaf_lut(h, override)
        except KeyError as exc:
            raise ConfigurationError(
                f"sign_class: {exc.args[0]}; set sign_class to one of its classes, or '' to use the classes "
                f"the hierarchy declares traffic_sign: true ({', '.join(h.traffic_sign_classes) or 'none'})",
                EXIT_PARAMETER_ERROR,
            ) from exc
        self.get_logger().info(f"traffic signs: the leaves under {override or ', '.join(h.traffic_sign_classes)}")
        return lut

    def _check_hierarchy(self, path: str) -> None:
        if not path:
            return
        try:
            expected = load_hierarchy(path)
        except HierarchyError as exc:
            raise ConfigurationError(f"hierarchy_path: {exc}", EXIT_MODEL_ERROR) from exc
        got = self.hierarchy
        if expected.classifier_sizes != got.classifier_sizes or [c.id for c in expected.leaves] != [
            c.id for c in got.leaves
        ]:
            raise ConfigurationError(
                f"hierarchy_path: {path} ({expected.name}: {expected.classifier_sizes}) does not match the model's "
                f"hierarchy ({got.name}: {got.classifier_sizes})",
                EXIT_MODEL_ERROR,
            )

    def _publish_label_info(self, qos: QoSProfile) -> None:
        h = self.hierarchy
        tables = [(f"~/{clf.name}/label_info", list(enumerate(clf.classes)), 255) for clf in h.classifiers]
        tables.append(("~/label_info", [(leaf.id, leaf.name) for leaf in h.leaves], h.void_value))
        for topic, classes, void in tables:
            msg = LabelInfo()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.threshold = 0.0
            msg.class_map = [VisionClass(class_id=int(i), class_name=n) for i, n in classes]
            msg.class_map.append(VisionClass(class_id=int(void), class_name="unlabeled"))
            pub = self.create_publisher(LabelInfo, topic, qos)
            pub.publish(msg)
            self._label_pubs.append(pub)

    # ------------------------------------------------------------------ input
    def _store(self, msg: Any, compressed: bool) -> None:
        delay_s = (self.get_clock().now().nanoseconds - stamp_ns(msg.header.stamp)) / 1e9
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
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return
                self.stats.on_error(f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _active(self, pub: Any) -> bool:
        return pub is not None and pub.get_subscription_count() > 0

    def _process(self, msg: Any, arrival: float, compressed: bool) -> None:
        masks = {k: pub for k, pub in self._mask_pubs.items() if self._active(pub)}
        clf_colored = {k: pub for k, pub in self._clf_colored_pubs.items() if self._active(pub)}
        single = {"mask": self._leaf_pub, "colored": self._colored_pub, "overlay": self._overlay_pub}
        single["traffic_signs"] = self._signs_pub
        wanted = {kind for kind, pub in single.items() if self._active(pub)} | ({"masks"} if masks else set())
        if not wanted and not clf_colored:
            self.stats.on_skipped()
            return
        p = self._params
        try:
            if compressed:
                rgb = compressed_to_rgb(msg, max_pixels=p["max_input_pixels"])
            else:
                rgb = image_to_rgb(msg, max_pixels=p["max_input_pixels"], mono16_shift=p["mono16_shift"])
        except ImageConversionError as exc:
            self.stats.on_bad_input(str(exc))
            self.get_logger().warning(f"dropping bad input image: {exc}", throttle_duration_sec=2.0)
            return

        net_in, fit = outputs.fit_input(rgb, self._target, PAD_VALUE_RGB)
        size = (int(net_in.shape[0]), int(net_in.shape[1]))
        why = input_problem(self.engine.input_constraints, *size)
        if why:  # a size the engine can never take (a TensorRT profile, a fixed-size model): one error per size
            self.stats.on_error(why)
            if size not in self._rejected_sizes:
                self._rejected_sizes.add(size)
                self.get_logger().error(why)
            return
        t0 = time.monotonic()
        try:
            decisions = self.engine.infer(net_in)
        except InputShapeError as exc:  # what input_problem cannot know (e.g. the engine's own shape check)
            self.stats.on_bad_input(str(exc))
            self.get_logger().warning(f"dropping input the engine cannot take: {exc}", throttle_duration_sec=2.0)
            return
        inference_s = time.monotonic() - t0
        per_clf, leaf = outputs.restore_decisions(decisions.per_classifier, decisions.leaf, fit)
        out = outputs.render(
            self.hierarchy,
            per_clf,
            leaf,
            rgb,
            wanted,
            sign_lut=self._sign_lut,
            min_sign_area=p["min_sign_area"],
            overlay_alpha=p["overlay_alpha"],
            colored_classifiers=tuple(clf_colored),
        )
        header = msg.header
        for name, pub in masks.items():
            pub.publish(mono8_msg(out.masks[name], header))
        for name, pub in clf_colored.items():
            pub.publish(rgb8_msg(out.classifier_colored[name], header))
        if out.leaf is not None:
            self._leaf_pub.publish((mono8_msg if leaf.dtype == np.uint8 else mono16_msg)(leaf, header))
        if "traffic_signs" in wanted:
            self._signs_pub.publish(detection_array(out.signs, header, DETECTION_TYPES))
        if out.colored is not None:
            self._colored_pub.publish(rgb8_msg(out.colored, header))
        if out.overlay is not None:
            self._overlay_pub.publish(rgb8_msg(out.overlay, header))
        self.stats.on_processed(arrival, inference_s)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        status = DiagnosticStatus(
            level=bytes([snap.level]),
            name=f"{self.get_name()}: segmentation",
            hardware_id=self.get_fully_qualified_name(),
            message=snap.message[:500],
            values=[KeyValue(key=k, value=v) for k, v in snap.values()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT / SIGTERM; returns (and exits with) the process exit code."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = SegmentationNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ConfigurationError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))  # console logging goes to stderr
        code = exc.exit_code
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
