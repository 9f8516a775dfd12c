"""The segmentation node: camera images in, hierarchical segmentation outputs out.

``segmentation_node`` (console script) / ``python -m hiseg_ros.node``. The node holds no ML logic:
the engine (``hiseg_ros.engines``) turns an RGB image into per-classifier decisions and the leaf
map, ``hiseg_ros.outputs.render`` turns those into masks, colours, overlay and sign instances,
``hiseg_ros.messages`` maps the sign instances to Detection2D, and this module wires them to ROS.

Topics (relative names; remap ``image`` to the camera topic):

- in: ``image`` (sensor_msgs/Image), or ``<resolved image>/compressed`` (sensor_msgs/CompressedImage)
  when ``use_compressed`` is true (the image_transport naming).
- out, all with the input header, at input resolution:
  ``~/<classifier>/mask`` (mono8 class indices, 255 outside the parent class; ``~/root/mask`` for
  the root classifier), ``~/mask`` (leaf ids, mono8, or mono16 when the hierarchy has leaf ids
  above 254), ``~/colored`` (rgb8), ``~/overlay`` (rgb8), ``~/traffic_signs``
  (vision_msgs/Detection2DArray: one Detection2D per sign instance, ``id`` empty (no tracking
  across frames), ``results[0].hypothesis.class_id`` = the LEAF NAME of the majority class, e.g.
  ``sign-speed-limit-30``, ``score`` = the majority fraction);
  ``~/<classifier>/label_info`` and ``~/label_info`` (vision_msgs/LabelInfo, transient local,
  published once: class index / leaf id -> class name, plus 255 (or 65535) ``unlabeled``);
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` seconds).

Only outputs with subscribers are computed. The subscription callback stores the newest message;
a worker thread processes the newest one, and a message overwritten before the worker took it is
counted as dropped. The model is loaded before the subscription is created. Exit codes: 0 after
SIGINT / SIGTERM, 1 when the model / hierarchy cannot be loaded, 2 for invalid parameters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
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
from .diagnostics import FrameStats
from .engines import BACKENDS, PAD_VALUE_RGB, PRECISIONS, InputShapeError, create_engine
from .hierarchy import HierarchyError, load_hierarchy
from .imaging import (
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    mono8_msg,
    mono16_msg,
    rgb8_msg,
)
from .messages import NODE_NAME, DetectionTypes, detection_array
from .outputs import OUTPUTS

RESIZE_POLICIES = ("none", "fit")
RELIABILITIES = ("best_effort", "reliable")
EXIT_MODEL_ERROR = 1
EXIT_PARAMETER_ERROR = 2
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


class ConfigurationError(Exception):
    """A start-up problem; ``exit_code`` tells main() what to return."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    dynamic: bool = False


#: Every parameter of the node (also read by the tests to check config/hiseg.yaml and the launch file).
PARAMETERS: tuple[Param, ...] = (
    Param("model_path", "", "Exported model (.onnx, or .pt for the torch backend; required)"),
    Param("hierarchy_path", "", "Optional hierarchy YAML that must match the model's embedded hierarchy"),
    Param("backend", "auto", "Inference backend; auto = TensorRT when available, else ONNX Runtime", BACKENDS),
    Param("precision", "fp16", "TensorRT precision (ignored by other backends)", PRECISIONS),
    Param("engine_cache_dir", "", "Directory of cached TensorRT engines ('' = the engine's default)"),
    Param("int8_calibration_dir", "", "Folder of calibration images for precision int8"),
    Param(
        "cpu_spin_wait",
        False,
        "ONNX Runtime CPU threads busy-wait between frames (faster alone; false leaves the cores to DDS and outputs)",
    ),
    Param("resize.policy", "none", "none: infer at input size; fit: scale keeping aspect + pad", RESIZE_POLICIES),
    Param("resize.width", 1024, "Network input width for resize.policy fit", int_range=(16, 16384)),
    Param("resize.height", 512, "Network input height for resize.policy fit", int_range=(16, 16384)),
    Param("input_qos.depth", 1, "History depth of the image subscription", int_range=(1, 100)),
    Param("input_qos.reliability", "best_effort", "Reliability of the image subscription", RELIABILITIES),
    Param("output_qos.depth", 1, "History depth of the output publishers", int_range=(1, 100)),
    Param("output_qos.reliability", "reliable", "Reliability of the output publishers", RELIABILITIES),
    Param("outputs", list(OUTPUTS), f"Outputs to publish, any of {', '.join(OUTPUTS)}"),
    Param("overlay_alpha", 0.5, "Weight of the colour mask in ~/overlay", float_range=(0.0, 1.0), dynamic=True),
    Param("min_sign_area", 16, "Smallest traffic-sign region in pixels", int_range=(1, 1 << 30), dynamic=True),
    Param("sign_class", "traffic-sign-front", "Class whose leaves are traffic signs ('' = no sign detection)"),
    Param("max_input_pixels", DEFAULT_MAX_PIXELS, "Larger input images are rejected", int_range=(1, 1 << 31)),
    Param("mono16_shift", 8, "mono16 input: right shift to 8 bit (8 = top byte)", int_range=(0, 15)),
    Param("use_compressed", False, "Subscribe to <image>/compressed (sensor_msgs/CompressedImage) instead"),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages", float_range=(0.1, 60.0)),
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


def _check_value(p: Param, value: Any) -> str | None:
    """Why ``value`` is invalid for ``p``, or None."""
    if p.choices and value not in p.choices:
        return f"{p.name}: {value!r} is not one of {', '.join(p.choices)}"
    if p.int_range and not p.int_range[0] <= value <= p.int_range[1]:
        return f"{p.name}: {value} is outside [{p.int_range[0]}, {p.int_range[1]}]"
    if p.float_range and not p.float_range[0] <= value <= p.float_range[1]:
        return f"{p.name}: {value} is outside [{p.float_range[0]}, {p.float_range[1]}]"
    return None


def _qos(depth: int, reliability: str, transient_local: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def load_engine(
    model_path: str, backend: str, precision: str, cache_dir: str, calibration_dir: str, spin_wait: bool = False
) -> tuple[Any, str]:
    """``hiseg_ros.engines.create_engine`` with the node's parameters; ConfigurationError on failure."""
    if not os.path.isfile(model_path):
        raise ConfigurationError(f"model_path: {model_path!r} does not exist or is not a file", EXIT_MODEL_ERROR)
    try:
        return create_engine(
            model_path,
            backend=backend,
            precision=precision,
            cache_dir=cache_dir or None,
            calibration_dir=calibration_dir or None,
            spin_wait=spin_wait,
        )
    except Exception as exc:  # ModelLoadError and whatever a corrupt file makes a backend raise
        raise ConfigurationError(
            f"cannot load model {model_path!r} with backend {backend!r}: {type(exc).__name__}: {exc}", EXIT_MODEL_ERROR
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
        self.engine, reason = load_engine(
            p["model_path"],
            p["backend"],
            p["precision"],
            p["engine_cache_dir"],
            p["int8_calibration_dir"],
            p["cpu_spin_wait"],
        )
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

        self._sign_lut = None
        if p["sign_class"]:
            try:
                self._sign_lut = outputs.sign_leaf_lut(h, p["sign_class"])
            except KeyError as exc:
                raise ConfigurationError(
                    f"sign_class: {exc.args[0]}; set sign_class to one of its classes or '' to disable sign detection",
                    EXIT_PARAMETER_ERROR,
                ) from exc
        self._target = (p["resize.height"], p["resize.width"]) if p["resize.policy"] == "fit" else None

        out_qos = _qos(p["output_qos.depth"], p["output_qos.reliability"])
        latched = _qos(1, "reliable", transient_local=True)
        wanted = set(p["outputs"])
        self._mask_pubs: dict[str, Any] = {}
        if "masks" in wanted:
            for clf in h.classifier_names:
                self._mask_pubs[clf] = self.create_publisher(Image, f"~/{clf}/mask", out_qos)
        self._leaf_pub = self.create_publisher(Image, "~/mask", out_qos) if "mask" in wanted else None
        self._colored_pub = self.create_publisher(Image, "~/colored", out_qos) if "colored" in wanted else None
        self._overlay_pub = self.create_publisher(Image, "~/overlay", out_qos) if "overlay" in wanted else None
        self._signs_pub = None
        if "traffic_signs" in wanted and self._sign_lut is not None:
            self._signs_pub = self.create_publisher(Detection2DArray, "~/traffic_signs", out_qos)
        self._label_pubs: list[Any] = []
        self._publish_label_info(latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.stats = FrameStats(hold_s=max(3.0, 3 * p["diagnostics_period"]))
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
            why = _check_value(p, param.value)
            if why:
                errors.append(why)
        if "outputs" in values:
            unknown = [o for o in values["outputs"] if o not in OUTPUTS]
            if unknown:
                errors.append(f"outputs: unknown output(s) {unknown}; expected any of {', '.join(OUTPUTS)}")
        if not values.get("model_path"):
            errors.append("model_path: required (path to the exported model), e.g. -p model_path:=/path/model.onnx")
        if errors:
            raise ConfigurationError("invalid parameters:\n  " + "\n  ".join(errors), EXIT_PARAMETER_ERROR)
        return values

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        spec = {p.name: p for p in PARAMETERS}
        for param in params:
            p = spec.get(param.name)
            if p is not None and p.dynamic:
                why = _check_value(p, param.value)
                if why:
                    return SetParametersResult(successful=False, reason=why)
        for param in params:
            if param.name in self._params:
                self._params[param.name] = param.value
        return SetParametersResult(successful=True)

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
        with self._lock:
            overwrote = self._pending is not None
            arrival = self.stats.on_received(overwrote)
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
        single = {"mask": self._leaf_pub, "colored": self._colored_pub, "overlay": self._overlay_pub}
        single["traffic_signs"] = self._signs_pub
        wanted = {kind for kind, pub in single.items() if self._active(pub)} | ({"masks"} if masks else set())
        if not wanted:
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
        t0 = time.monotonic()
        try:
            decisions = self.engine.infer(net_in)
        except InputShapeError as exc:  # a size the engine cannot take (e.g. a TensorRT profile)
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
        )
        header = msg.header
        for name, pub in masks.items():
            pub.publish(mono8_msg(out.masks[name], header))
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
