"""Evaluate a model on a rosbag2: offline (the engine on every frame) or live (through the running node).

    python -m training.evaluation.bags.evaluate BAG --model M.onnx --out DIR [--mode offline|live]
        [--rate-scale 1.0] [--dataset cityscapes] [--camera-topic /camera/image_raw]
        [--label-topic /camera/labels] [--backend auto] [--params-file config/hiseg.yaml]
        [--node-arg=-p --node-arg=backend:=onnxruntime ...] [--frame-timeout 5] [--startup-timeout 120]
        [--samples 4] [--out-storage same|sqlite3|mcap] [--no-output-bag] [--overwrite] [--no-progress]

offline
    Runs ``hiseg_ros.engines`` directly on every camera frame, as fast as it can. The latency figures
    are the engine's inference time per frame; ``fps`` is frames per wall-clock second of the whole loop.
live
    Starts the node as a subprocess exactly as ``launch/hiseg.launch.py`` does (``python -m
    hiseg_ros.node --ros-args -r __node:=segmentation_node --params-file <params> -p model_path:=M -r
    image:=<camera topic>``, plus ``use_compressed:=true`` for a CompressedImage bag and any
    ``--node-arg``), plays the bag into it over DDS with real rclpy publishing at the recorded rate
    times ``--rate-scale``, and collects every output topic. Each published frame is re-stamped with
    the current time (``time.time_ns()``, the clock the arrival times are taken with), so
    latency = arrival of the frame's LAST output - header stamp (``first_output_latency_ms``: its
    first output). A frame without any output within ``--frame-timeout`` seconds is *dropped*, one
    with only some outputs *partial*. DDS stays on loopback (``scripts/ros_env.sh`` is applied when the
    environment does not set it up already).

Metrics (``metrics.json``): the :class:`training.evaluation.evaluate.EvaluationReport` of the frames with ground
truth (the label topic holds the ``--dataset``'s native label ids, e.g. Cityscapes labelIds), latency
p50 / p95 / p99, fps, achieved input rate, frame counts. Offline, the per-classifier view uses the
engine's raw decisions (identical to ``training.evaluation.evaluate``); live, it uses the node's
``~/<classifier>/mask`` where a pixel not routed to the classifier (255) counts as a "no class"
prediction (a false negative); the per-dataset view is exact in both modes.

Outputs in DIR: ``bag/`` (the input camera and label messages plus the outputs under
``/segmentation_node/...`` with the input frames' header stamps and bag times, so ``ros2 bag play``
+ RViz with config/hiseg.rviz shows the result), ``metrics.json``, ``report.html`` (PNGs embedded),
``report.md`` + PNGs, ``samples/`` and, live, ``node.log``. DIR is built in a hidden sibling folder
and renamed into place at the end; a run that stopped early or missed frames still writes DIR with
``"complete": false`` and the reason, and exits with 3. Memory stays flat: frames are streamed and
only per-frame latencies (8 bytes each) are kept.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiseg_ros.hierarchy import IGNORE, Hierarchy
from training import REPO
from training.evaluation.bags.node_process import ensure_loopback_env
from training.evaluation.evaluate import EvaluationReport, Evaluator, atomic_write
from training.evaluation.metrics import ConfusionMatrix

from .read import DEFAULT_CAMERA_TOPIC, DEFAULT_LABEL_TOPIC, IMAGE, BagError, FrameReader, decode_label
from .write import image_cdr

NODE_NAME = "segmentation_node"  # hiseg_ros.node.NODE_NAME (not imported: it pulls in rclpy)
DETECTIONS = "vision_msgs/msg/Detection2DArray"
EXIT_OK, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 3


# ---------------------------------------------------------------------------- environment / types
def _vision_msg_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates = [Path(get_package_share_directory("vision_msgs")) / "msg"]
    except Exception:  # ament_index missing, or the package not registered
        candidates = []
    candidates.append(Path(sys.prefix) / "share" / "vision_msgs" / "msg")
    return next((c for c in candidates if (c / "Detection2DArray.msg").is_file()), None)


def output_typestore() -> tuple[Any, bool]:
    """The Kilted type store plus vision_msgs (from its .msg files) when installed; (store, has_vision)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

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
    sec, nsec = struct.unpack_from(f"{order}iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def restamp_cdr(raw: bytes | memoryview, stamp: int) -> bytes:
    """Copy of a serialized header-first message with its top-level header stamp replaced."""
    out = bytearray(raw)
    order = "<" if out[1] & 1 else ">"
    struct.pack_into(f"{order}iI", out, 4, stamp // 1_000_000_000, stamp % 1_000_000_000)
    return bytes(out)


# ---------------------------------------------------------------------------- output bag
class OutputBag:
    """rosbags writer of the result bag; connections are added on first use."""

    def __init__(self, path: Path, storage: str, store: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

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


def detections_cdr(store: Any, hierarchy: Hierarchy, signs: Sequence[Any], stamp: int, frame_id: str) -> bytes:
    """Serialized vision_msgs/Detection2DArray as the node publishes it (see hiseg_ros.node)."""
    t = store.types
    header = t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
        frame_id=frame_id,
    )
    dets = []
    for i, sign in enumerate(signs):
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            covariance=np.zeros(36, dtype=np.float64),
        )
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=sign.class_name, score=float(sign.score)),
            pose=pose,
        )
        cx, cy = sign.center
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=cx, y=cy), theta=0.0),
            size_x=float(sign.width),
            size_y=float(sign.height),
        )
        dets.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=str(i)))
    msg = t[DETECTIONS](header=header, detections=dets)
    return bytes(store.serialize_cdr(msg, DETECTIONS))


def restamp_detections(store: Any, raw: bytes, stamp: int) -> bytes:
    """Detection2DArray with the array's and every detection's header stamp replaced."""
    msg = store.deserialize_cdr(raw, DETECTIONS)
    time_t = store.types["builtin_interfaces/msg/Time"]
    msg.header.stamp = time_t(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
    for det in msg.detections:
        det.header.stamp = msg.header.stamp
    return bytes(store.serialize_cdr(msg, DETECTIONS))


# ---------------------------------------------------------------------------- metrics
def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    vals = np.asarray(values, dtype=np.float64)
    if not vals.size:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = (float(v) for v in np.percentile(vals, [50, 95, 99]))
    return {
        "count": int(vals.size),
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "mean": float(vals.mean()),
        "max": float(vals.max()),
    }


class Metrics:
    """Segmentation metrics of the frames with ground truth, in either mode (see the module docstring)."""

    def __init__(self, hierarchy: Hierarchy, dataset: str) -> None:
        self.hierarchy = hierarchy
        self.dataset = dataset
        self.evaluator = Evaluator(hierarchy)
        self.evaluator.check_dataset(dataset)
        self.live_classifiers: dict[str, Any] | None = None

    def add_decisions(self, label: np.ndarray, per_classifier: Mapping[str, np.ndarray]) -> None:
        """Offline: the engine's raw decisions (exactly what training.evaluation.evaluate counts)."""
        self.evaluator.add(self.dataset, label, per_classifier)

    def add_node_masks(self, label: np.ndarray, masks: Mapping[str, np.ndarray], leaf: np.ndarray) -> bool:
        """Live: the node's per-classifier masks (255 = not routed there); True when they flatten to ``leaf``."""
        from training.evaluation.evaluate import LabelSpaceResult

        h = self.hierarchy
        filled = {name: np.where(m == IGNORE, 0, m).astype(np.uint8) for name, m in masks.items()}
        flat = self.evaluator.add(self.dataset, label, filled)  # per-dataset view: exact (path decisions only)
        if self.live_classifiers is None:
            self.live_classifiers = {
                c.name: LabelSpaceResult(c.name, c.classes, ConfusionMatrix(c.num_classes)) for c in h.classifiers
            }
        targets = h.targets(self.dataset, label)
        for name, res in self.live_classifiers.items():
            res.confusion.update(targets[name], masks[name])  # 255 -> the void ("no class") column
            res.num_samples += 1
        return bool(np.array_equal(flat, leaf))

    def report(self) -> EvaluationReport | None:
        rep = self.evaluator.report()
        if not rep.num_samples:
            return None
        if self.live_classifiers is not None:
            rep.classifiers = dict(self.live_classifiers)
        return rep


# ---------------------------------------------------------------------------- results
@dataclass
class RunState:
    mode: str
    bag: Path
    model: Path
    dataset: str
    frames_in_bag: int
    camera_topic: str
    label_topic: str | None
    processed: int = 0  # offline: inferred; live: published
    with_outputs: int = 0
    dropped: int = 0
    partial: int = 0
    with_gt: int = 0
    without_gt: int = 0
    late_outputs: int = 0
    inconsistent_masks: int = 0
    latencies: array.array = field(default_factory=lambda: array.array("d"))
    first_latencies: array.array = field(default_factory=lambda: array.array("d"))
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    samples: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


class ResultDir:
    """DIR built in a hidden sibling folder and renamed into place by :meth:`commit`."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} exists (use --overwrite to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.tmp-"))
        (self.tmp / "samples").mkdir()

    def commit(self) -> None:
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, old)
            os.rename(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.out)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _sample_indices(count: int, n: int) -> set[int]:
    if count <= 0 or n <= 0:
        return set()
    return {round(float(v)) for v in np.linspace(0, count - 1, min(n, count))}


def _save_sample(state: RunState, res: ResultDir, index: int, stamp: int, rgb: np.ndarray | None, overlay: np.ndarray):
    import cv2

    image = overlay if rgb is None or rgb.shape != overlay.shape else np.concatenate([rgb, overlay], axis=1)
    if image.shape[0] < 256:  # tiny test images: enlarge (nearest) so the report shows something
        factor = -(-256 // image.shape[0])
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ok:
        name = f"samples/frame_{index:06d}.png"
        atomic_write(res.tmp / name, png.tobytes())
        what = "input | node overlay" if state.mode == "live" else "input | overlay"
        state.samples.append((f"frame {index} (stamp {stamp}): {what}", name))


def _finish(state: RunState, res: ResultDir, metrics: Metrics | None, extra: dict[str, Any]) -> dict[str, Any]:
    from .report import write_report

    missing = state.frames_in_bag - state.processed
    if state.reason is None and missing > 0:
        state.fail(f"only {state.processed} of {state.frames_in_bag} frames in the bag were processed")
    if state.reason is None and (state.dropped or state.partial):
        state.fail(
            f"{state.dropped} frame(s) got no output and {state.partial} only some outputs "
            f"(of {state.processed} published)"
        )
    evaluation = metrics.report() if metrics is not None else None
    live = state.mode == "live"
    payload: dict[str, Any] = {
        "complete": state.reason is None,
        "reason": state.reason,
        "mode": state.mode,
        "bag": str(state.bag),
        "model": str(state.model),
        "dataset": state.dataset,
        "camera_topic": state.camera_topic,
        "label_topic": state.label_topic,
        "frames": {
            "in_bag": state.frames_in_bag,
            "processed": state.processed,
            "with_outputs": state.with_outputs,
            "dropped": state.dropped,
            "partial": state.partial,
            "with_gt": state.with_gt,
            "without_gt": state.without_gt,
            "late_outputs": state.late_outputs,
        },
        "latency_kind": "latency stamp->all outputs" if live else "inference time",
        "latency_ms": percentiles(state.latencies),
        **extra,
        "evaluation": None if evaluation is None else evaluation.to_dict(),
        "classifier_view": (
            "node masks; pixels not routed to the classifier count as 'no class' (false negative)"
            if live
            else "raw engine decisions (as training.evaluation.evaluate)"
        ),
        "notes": state.notes,
        "samples": [name for _, name in state.samples],
    }
    if live:
        payload["first_output_latency_ms"] = percentiles(state.first_latencies)
        if state.inconsistent_masks:
            state.notes.append(
                f"{state.inconsistent_masks} frame(s) whose classifier masks do not flatten to the node's ~/mask"
            )
    write_report(res.tmp, payload, evaluation, list(state.latencies), state.samples)
    atomic_write(res.tmp / "metrics.json", (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())
    return payload


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled)


# ---------------------------------------------------------------------------- offline
def run_offline(args: argparse.Namespace, reader: FrameReader, res: ResultDir, state: RunState) -> dict[str, Any]:
    from hiseg_ros import outputs
    from hiseg_ros.engines import create_engine

    engine, why = create_engine(str(args.model), backend=args.backend)
    h = engine.hierarchy
    metrics = Metrics(h, args.dataset)
    store, has_vision = output_typestore()
    sign_lut = outputs.sign_leaf_lut(h, args.sign_class) if args.sign_class else None
    topics = output_topics(h, has_vision and sign_lut is not None)
    if not has_vision:
        state.notes.append("vision_msgs is not installed: no traffic_signs in the output bag")
    bag = None if args.no_output_bag else OutputBag(res.tmp / "bag", _out_storage(args, reader), store)
    wanted_samples = _sample_indices(len(reader), args.samples)
    ns = f"/{NODE_NAME}"
    start = time.perf_counter()
    bar = _progress(len(reader), not args.no_progress, "offline")
    try:
        for frame in reader:
            t0 = time.perf_counter()
            dec = engine.infer(frame.rgb)
            state.latencies.append(1000.0 * (time.perf_counter() - t0))
            state.processed += 1
            state.with_outputs += 1
            if frame.label is not None:
                metrics.add_decisions(frame.label, dec.per_classifier)
                state.with_gt += 1
            else:
                state.without_gt += 1
            need_overlay = bag is not None or frame.index in wanted_samples
            if need_overlay:
                colored = outputs.colorize(h, dec.leaf)
                signs = outputs.find_signs(h, dec.leaf, sign_lut, args.min_sign_area) if sign_lut is not None else []
                over = outputs.overlay(frame.rgb, colored, args.overlay_alpha, signs, h.palette)
                if frame.index in wanted_samples:
                    _save_sample(state, res, frame.index, frame.stamp_ns, frame.rgb, over)
            if bag is not None:
                t, s, fid = frame.bag_time_ns, frame.stamp_ns, frame.frame_id
                bag.write(reader.info.camera_topic, frame.camera_msgtype, t, frame.camera_raw)
                if frame.label_raw is not None:
                    bag.write(reader.info.label_topic, IMAGE, frame.label_bag_time_ns or t, frame.label_raw)
                for name, mask in outputs.classifier_masks(h, dec.per_classifier, dec.leaf).items():
                    bag.write(f"{ns}/{name}/mask", IMAGE, t, image_cdr(mask, "mono8", s, fid))
                leaf_encoding = "mono8" if dec.leaf.dtype == np.uint8 else "mono16"
                bag.write(f"{ns}/mask", IMAGE, t, image_cdr(dec.leaf, leaf_encoding, s, fid))
                bag.write(f"{ns}/colored", IMAGE, t, image_cdr(colored, "rgb8", s, fid))
                bag.write(f"{ns}/overlay", IMAGE, t, image_cdr(over, "rgb8", s, fid))
                if f"{ns}/traffic_signs" in topics:
                    bag.write(f"{ns}/traffic_signs", DETECTIONS, t, detections_cdr(store, h, signs, s, fid))
            bar.update()
    except BagError as exc:
        state.fail(str(exc))
    except ValueError as exc:  # label ids the hierarchy does not map, wrong shapes
        state.fail(f"bag {state.bag}, topic {state.label_topic}: {exc}")
    finally:
        bar.close()
        if bag is not None:
            bag.close()
    wall = time.perf_counter() - start
    extra = {
        "fps": state.processed / wall if wall > 0 and state.processed else None,
        "wall_seconds": wall,
        "engine": getattr(engine, "name", type(engine).__name__),
        "engine_choice": why,
        "recorded_rate_hz": reader.info.rate_hz,
        "output_bag": None if bag is None else "bag",
        "output_topics": sorted(topics),
    }
    return _finish(state, res, metrics, extra)


def _out_storage(args: argparse.Namespace, reader: FrameReader) -> str:
    return reader.info.storage if args.out_storage == "same" else args.out_storage


# ---------------------------------------------------------------------------- live
@dataclass
class _Pending:
    frame: Any
    publish_ns: int
    publish_mono: float
    outputs: dict[str, tuple[bytes, int]] = field(default_factory=dict)


def _model_hierarchy(model: Path, backend: str) -> Hierarchy:
    if model.suffix == ".onnx":
        from hiseg_ros.engines.metadata import read_onnx_metadata

        return read_onnx_metadata(model.read_bytes(), model).hierarchy
    from hiseg_ros.engines import create_engine

    return create_engine(str(model), backend=backend)[0].hierarchy


def node_ros_args(args: argparse.Namespace, image_topic: str, compressed: bool) -> list[str]:
    """``--ros-args`` as launch/hiseg.launch.py gives them (see tests/integration/test_node.py), plus extras."""
    ros = ["-r", f"__node:={NODE_NAME}", "--params-file", str(args.params_file), "-p", f"model_path:={args.model}"]
    ros += ["-r", f"image:={image_topic}"]
    if compressed:
        ros += ["-p", "use_compressed:=true"]
    return ros + list(args.node_arg)


class LiveRun:
    def __init__(self, args: argparse.Namespace, reader: FrameReader, res: ResultDir, state: RunState) -> None:
        self.args, self.reader, self.res, self.state = args, reader, res, state
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.ctx = self.node = self.executor = None
        self.publish_times: list[int] = []  # first publish (ns)
        self.last_publish = 0
        self.completions = (0, 0, 0)  # first / last time (ns) a frame had all outputs, how many

    # -- set-up -------------------------------------------------------------------------------
    def _start_node(self, compressed: bool) -> None:
        info = self.reader.info
        image_topic = info.camera_topic[: -len("/compressed")] if compressed else info.camera_topic
        cmd = [sys.executable, "-m", "hiseg_ros.node", "--ros-args", *node_ros_args(self.args, image_topic, compressed)]
        self.command = cmd
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
        with open(self.res.tmp / "node.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _node_log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.res.tmp / "node.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _open_ros(self, topics: Mapping[str, str], compressed: bool) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("hiseg_bag_player", context=self.ctx)
        self.msg_class = CompressedImage if compressed else Image
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(self.msg_class, self.reader.info.camera_topic, qos)
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = {}
        for topic, msgtype in topics.items():
            if msgtype == DETECTIONS:
                from vision_msgs.msg import Detection2DArray

                cls: Any = Detection2DArray
            else:
                cls = Image

            def callback(raw: bytes, topic: str = topic) -> None:
                self.events.put(("out", topic, raw, time.time_ns()))

            self.subs[topic] = self.node.create_subscription(cls, topic, callback, out_qos, raw=True)
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diagnostics(msg: Any) -> None:
            for status in msg.status:
                if status.hardware_id == f"/{NODE_NAME}":
                    self.node_diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_time = time.monotonic()

        self.node_diagnostics: dict[str, str] | None = None
        self.diagnostics_time = 0.0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.spin_thread = threading.Thread(target=self._spin, daemon=True)
        self.spin_thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # ExternalShutdownException on close
            return

    def _wait_ready(self, topics: dict[str, str]) -> None:
        """Until the node subscribes to the camera topic and publishes every output (or fail)."""
        deadline = time.monotonic() + self.args.startup_timeout
        optional = {t for t, m in topics.items() if m == DETECTIONS}
        camera_seen = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the node exited with code {self.proc.returncode} during start-up:\n{self._node_log_tail()}"
                )
            missing = [t for t, s in self.subs.items() if s.get_publisher_count() < 1]
            camera = self.pub.get_subscription_count() >= 1
            if camera and camera_seen is None:
                camera_seen = time.monotonic()
            if camera and not missing:
                break
            if camera and set(missing) <= optional and time.monotonic() - camera_seen > 3.0:
                for t in missing:
                    self.node.destroy_subscription(self.subs.pop(t))
                    topics.pop(t)
                self.state.notes.append(f"the node does not publish {', '.join(missing)}")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the node did not subscribe to {self.reader.info.camera_topic} / publish {missing} within "
                    f"{self.args.startup_timeout:g} s:\n{self._node_log_tail()}"
                )
            time.sleep(0.1)
        self._warm_up(topics, deadline)

    def _warm_up(self, topics: Mapping[str, str], deadline: float) -> None:
        """Publish the bag's first frame (not counted) until one copy gets every output back.

        Matching is asynchronous on both ends: until the node's publishers have matched our
        subscriptions it skips or loses outputs. This also takes the first (slow) inference.
        """
        from rclpy.serialization import deserialize_message

        first = next(iter(FrameReader(self.reader.bag, self.reader.info.camera_topic, None, decode=False)), None)
        if first is None:
            return
        msg = deserialize_message(first.camera_raw, self.msg_class)
        got: dict[int, set[str]] = {}
        attempts = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {self.proc.returncode}:\n{self._node_log_tail()}")
            stamp = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // 1_000_000_000, stamp % 1_000_000_000
            self.pub.publish(msg)
            attempts += 1
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                try:
                    kind, topic, raw, _ = self.events.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "out":
                    seen = got.setdefault(cdr_stamp(raw), set())
                    seen.add(topic)
                    if seen >= set(topics):
                        time.sleep(0.3)  # outputs of earlier warm-up frames still in flight
                        while not self.events.empty():
                            self.events.get_nowait()
                        self.warm_up_frames = attempts
                        self.state.notes.append(f"warm-up: {attempts} frame(s) before the node answered on all outputs")
                        return
        raise RuntimeError(
            f"the node did not publish all outputs for a warm-up frame within {self.args.startup_timeout:g} s:\n"
            f"{self._node_log_tail()}"
        )

    def close(self) -> int | None:
        code = None
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        if self.node is not None:
            self.node.destroy_node()
        if self.ctx is not None:
            import rclpy

            rclpy.try_shutdown(context=self.ctx)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(2)  # SIGINT, as launch does
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            code = self.proc.returncode
        return code

    # -- playing ------------------------------------------------------------------------------
    def _play(self) -> None:
        from rclpy.serialization import deserialize_message

        scale = self.args.rate_scale
        t0_wall = bag_t0 = None
        try:
            for frame in self.reader:
                if self.stop.is_set():
                    break
                if t0_wall is None:
                    t0_wall, bag_t0 = time.monotonic(), frame.bag_time_ns
                target = t0_wall + (frame.bag_time_ns - bag_t0) / 1e9 / scale
                while not self.stop.is_set() and (wait := target - time.monotonic()) > 0:
                    time.sleep(min(wait, 0.05))
                if self.stop.is_set():
                    break
                msg = deserialize_message(frame.camera_raw, self.msg_class)
                if frame.index not in self.wanted_samples:
                    frame.rgb = None  # keep memory flat: only sample frames keep their pixels
                stamp = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // 1_000_000_000, stamp % 1_000_000_000
                self.events.put(("in", stamp, frame, time.monotonic()))
                self.pub.publish(msg)
                if not self.publish_times:
                    self.publish_times.append(stamp)
                self.last_publish = stamp
            self.events.put(("end", None, None, None))
        except BaseException as exc:  # BagError mid-stream, ...
            self.events.put(("error", exc, None, None))

    def run(self) -> dict[str, Any]:
        args, state, info = self.args, self.state, self.reader.info
        ensure_loopback_env()
        hierarchy = _model_hierarchy(args.model, args.backend)
        metrics = Metrics(hierarchy, args.dataset)
        store, has_vision = output_typestore()
        try:
            import vision_msgs.msg  # noqa: F401

            vision_here = True
        except ImportError:
            vision_here = False
        topics = output_topics(hierarchy, has_vision and vision_here and bool(args.sign_class))
        self.wanted_samples = _sample_indices(len(self.reader), args.samples)
        bag = None
        code = None
        wall0 = time.monotonic()
        bar = _progress(len(self.reader), not args.no_progress, "live")
        try:
            self._start_node(info.compressed)
            self._open_ros(topics, info.compressed)
            self._wait_ready(topics)
            bag = (
                None if args.no_output_bag else OutputBag(self.res.tmp / "bag", _out_storage(args, self.reader), store)
            )
            self.expected = set(topics)
            self.topics, self.store, self.bag, self.metrics = topics, store, bag, metrics
            player = threading.Thread(target=self._play, name="bag_player", daemon=True)
            play_start = time.monotonic()
            player.start()
            self._collect(bar)
            self.stop.set()
            collected = time.monotonic()
            while self.diagnostics_time < collected and time.monotonic() - collected < 2.5:
                time.sleep(0.05)  # the node's counters after the last frame (diagnostics_period 1 s)
            player.join(timeout=10)
            play_wall = time.monotonic() - play_start
        except KeyboardInterrupt:
            state.fail("interrupted (Ctrl-C)")
            play_wall = time.monotonic() - wall0
        except RuntimeError as exc:
            state.fail(str(exc))
            play_wall = time.monotonic() - wall0
        finally:
            self.stop.set()
            bar.close()
            code = self.close()
            if bag is not None:
                bag.close()
        n = state.processed
        span = (self.last_publish - self.publish_times[0]) / 1e9 if n > 1 else 0.0
        first_done, last_done, n_done = self.completions
        fps = (n_done - 1) * 1e9 / (last_done - first_done) if n_done > 1 and last_done > first_done else None
        recorded = info.rate_hz
        extra = {
            "fps": fps,
            "input_rate_hz": (n - 1) / span if span > 0 else None,
            "recorded_rate_hz": recorded,
            "rate_scale": args.rate_scale,
            "target_rate_hz": None if recorded is None else recorded * args.rate_scale,
            "wall_seconds": play_wall,
            "output_bag": None if bag is None else "bag",
            "output_topics": sorted(topics),
            "node": {
                "command": getattr(self, "command", None),
                "exit_code": code,
                "log": "node.log",
                # the node's own counters (FrameStats): include the warm-up frames, up to
                # diagnostics_period old; frames_dropped = overwritten by a newer frame in the node
                "last_diagnostics": getattr(self, "node_diagnostics", None),
            },
        }
        diag = getattr(self, "node_diagnostics", None)
        if diag and diag.get("frames_received", "").isdigit():
            sent = n + getattr(self, "warm_up_frames", 0)
            received, dropped = int(diag["frames_received"]), int(diag.get("frames_dropped", "0") or 0)
            state.notes.append(
                f"node counters: received {received} of {sent} published frames (incl. warm-up), "
                f"{dropped} dropped by its latest-frame policy"
                + (f"; {sent - received} never reached the node (best-effort input)" if sent > received else "")
            )
        if code not in (0, None) and state.reason is None:
            state.fail(f"the node exited with code {code}:\n{self._node_log_tail()}")
        return _finish(state, self.res, metrics, extra)

    def _collect(self, bar: Any) -> None:
        state = self.state
        pending: OrderedDict[int, _Pending] = OrderedDict()
        player_done = False
        timeout = self.args.frame_timeout
        while True:
            try:
                kind, a, b, c = self.events.get(timeout=0.05)
            except queue.Empty:
                kind = None
            if kind == "in":
                pending[a] = _Pending(b, a, c)
                state.processed += 1
            elif kind == "out":
                stamp = cdr_stamp(b)
                item = pending.get(stamp)
                if item is None or a in item.outputs:
                    state.late_outputs += 1
                else:
                    item.outputs[a] = (b, c)
                    if len(item.outputs) == len(self.expected):
                        del pending[stamp]
                        self._finalize(item)
                        bar.update()
            elif kind == "end":
                player_done = True
            elif kind == "error":
                player_done = True
                state.fail(str(a) if isinstance(a, BagError) else f"playing the bag failed: {type(a).__name__}: {a}")
            now = time.monotonic()
            while pending:
                first = next(iter(pending.values()))
                if now - first.publish_mono < timeout:
                    break
                pending.popitem(last=False)
                self._finalize(first)
                bar.update()
            if self.proc.poll() is not None:
                state.fail(
                    f"the node exited with code {self.proc.returncode} during playback:\n{self._node_log_tail()}"
                )
                self.stop.set()
                for item in pending.values():
                    self._finalize(item)
                return
            if player_done and not pending:
                return

    def _finalize(self, item: _Pending) -> None:
        state, frame, bag, store = self.state, item.frame, self.bag, self.store
        t, s = frame.bag_time_ns, frame.stamp_ns
        if bag is not None:
            bag.write(self.reader.info.camera_topic, frame.camera_msgtype, t, frame.camera_raw)
            if frame.label_raw is not None:
                bag.write(self.reader.info.label_topic, IMAGE, frame.label_bag_time_ns or t, frame.label_raw)
            for topic, (raw, _) in item.outputs.items():
                msgtype = self.topics[topic]
                data = restamp_detections(store, raw, s) if msgtype == DETECTIONS else restamp_cdr(raw, s)
                bag.write(topic, msgtype, t, data)
        if not item.outputs:
            state.dropped += 1
            return
        if len(item.outputs) < len(self.expected):
            state.partial += 1
            if state.partial <= 5:
                missing = ", ".join(sorted(self.expected - set(item.outputs)))
                state.notes.append(f"frame {frame.index} (stamp {s}): no {missing}")
            return
        arrivals = [arr for _, arr in item.outputs.values()]
        state.with_outputs += 1
        state.latencies.append((max(arrivals) - item.publish_ns) / 1e6)
        state.first_latencies.append((min(arrivals) - item.publish_ns) / 1e6)
        first_done, _, n_done = self.completions
        self.completions = (first_done if n_done else max(arrivals), max(arrivals), n_done + 1)
        ns = f"/{NODE_NAME}"

        def image(topic: str) -> Any:
            return store.deserialize_cdr(item.outputs[topic][0], IMAGE)

        if frame.label is not None:
            h = self.metrics.hierarchy
            masks = {c: decode_label(image(f"{ns}/{c}/mask"), IMAGE) for c in h.classifier_names}
            leaf = decode_label(image(f"{ns}/mask"), IMAGE)
            try:
                if not self.metrics.add_node_masks(frame.label, masks, leaf):
                    state.inconsistent_masks += 1
            except ValueError as exc:
                state.fail(f"bag {state.bag}, topic {state.label_topic}: {exc}")
            state.with_gt += 1
        else:
            state.without_gt += 1
        if frame.index in self.wanted_samples:
            msg = image(f"{ns}/overlay")
            over = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
            over = over.reshape(msg.height, msg.width, 3)
            _save_sample(state, self.res, frame.index, s, frame.rgb, np.ascontiguousarray(over))


# ---------------------------------------------------------------------------- command line
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluation.bags.evaluate", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    ap.add_argument("--model", required=True, type=Path, help="exported model (.onnx)")
    ap.add_argument("--out", required=True, type=Path, help="result folder (created atomically)")
    ap.add_argument("--mode", choices=("offline", "live"), default="offline")
    ap.add_argument("--rate-scale", type=float, default=1.0, help="live: play at this multiple of the recorded rate")
    ap.add_argument("--dataset", default="cityscapes", help="hierarchy dataset whose native ids the labels hold")
    ap.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    ap.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="ground-truth topic ('' = none)")
    ap.add_argument("--require-labels", action="store_true", help="fail when the bag has no ground-truth topic")
    ap.add_argument("--backend", default="auto", help="offline engine backend (live: set it with --node-arg)")
    ap.add_argument("--params-file", type=Path, default=REPO / "config" / "hiseg.yaml", help="live: node parameters")
    ap.add_argument("--node-arg", action="append", default=[], help="live: extra --ros-args item (repeatable)")
    ap.add_argument("--frame-timeout", type=float, default=5.0, help="live: seconds to wait for a frame's outputs")
    ap.add_argument("--startup-timeout", type=float, default=120.0, help="live: seconds for the node to come up")
    ap.add_argument("--samples", type=int, default=4, help="sample overlays in the report")
    ap.add_argument("--out-storage", choices=("same", "sqlite3", "mcap"), default="same")
    ap.add_argument("--no-output-bag", action="store_true")
    ap.add_argument("--overlay-alpha", type=float, default=0.5, help="offline overlay weight (the node's default)")
    ap.add_argument("--min-sign-area", type=int, default=16, help="offline sign detection (the node's default)")
    ap.add_argument("--sign-class", default="traffic-sign-front", help="'' = no traffic_signs")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.rate_scale <= 0:
        ap.error("--rate-scale must be positive")
    return args


def evaluate_bag(argv: Sequence[str] | None = None) -> tuple[int, dict[str, Any] | None]:
    """The command without printing: (exit code, metrics dict or None when nothing was written)."""
    args = _parse_args(argv)
    args.model = args.model.resolve()
    if not args.model.is_file():
        raise FileNotFoundError(f"--model {args.model} does not exist")
    reader = FrameReader(args.bag, args.camera_topic, args.label_topic or None, require_labels=args.require_labels)
    res = ResultDir(args.out, args.overwrite)
    info = reader.info
    state = RunState(
        args.mode, info.path, args.model, args.dataset, info.frame_count, info.camera_topic, info.label_topic
    )
    if info.label_topic is None:
        state.notes.append("the bag has no ground-truth topic: no segmentation metrics")
    try:
        if args.mode == "offline":
            metrics = run_offline(args, reader, res, state)
        else:
            metrics = LiveRun(args, reader, res, state).run()
        res.commit()
    except BaseException:
        res.discard()
        raise
    return (EXIT_OK if metrics["complete"] else EXIT_INCOMPLETE), metrics


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code, metrics = evaluate_bag(argv)
    except (BagError, OSError, ValueError, KeyError, RuntimeError) as exc:  # nothing written
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    args = _parse_args(argv)
    lat = metrics["latency_ms"]
    print(f"{'complete' if metrics['complete'] else 'INCOMPLETE: ' + str(metrics['reason'])}")
    fr = metrics["frames"]
    print(
        f"{metrics['mode']}: {fr['with_outputs']}/{fr['in_bag']} frames with outputs, {fr['dropped']} dropped, "
        f"{metrics['latency_kind']} p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, fps {metrics['fps']}"
    )
    for name, ds in ((metrics.get("evaluation") or {}).get("datasets") or {}).items():
        print(f"mIoU {name}: {ds.get('miou')}")
    print(f"report: {args.out / 'report.html'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
