"""Live bag evaluation: the node in its own process, the bag played into it over DDS at the recorded rate.

See :mod:`training.evaluation.bags.evaluate` for what is measured. The node is started as
launch/hiseg.launch.py starts it and warmed up (:mod:`training.evaluation.bags.live_startup`); this
process publishes the frames (:mod:`training.evaluation.bags.live_client`), matches every output to
its frame by header stamp, and writes the output bag re-stamped to the input stamps.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message

from hiseg_ros.engines import create_engine
from hiseg_ros.engines.metadata import read_onnx_metadata
from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.messages import NODE_NAME, NS_PER_S
from hiseg_ros.node_params import effective_parameters

from .live_client import LiveClient
from .live_startup import NODE_LOG, bring_up, start_node
from .node_process import NodeProcess, ensure_loopback_env
from .options import EvaluateOptions
from .output_bag import OutputBag, cdr_stamp, output_topics, restamp_cdr, restamp_detections
from .read import IMAGE, BagError, BagFrame, FrameReader, decode_label
from .result import BagResult, LatencyStats, LiveDetails, NodeDetails
from .run import RunState, SegmentationMetrics, finish, progress_bar, sample_indices
from .sign_scores import SIGN_RULE
from .sign_truth import decode_signs
from .vision_types import DETECTIONS, output_typestore


@dataclass
class _Pending:
    """A published frame waiting for its outputs: topic -> (serialized message, arrival ns)."""

    frame: BagFrame
    publish_ns: int
    publish_mono: float
    outputs: dict[str, tuple[bytes, int]] = field(default_factory=dict)


def model_hierarchy(model: Path, backend: str) -> Hierarchy:
    """The model's hierarchy without loading the network (ONNX: from its metadata)."""
    if model.suffix == ".onnx":
        return read_onnx_metadata(model.read_bytes(), model).hierarchy
    return create_engine(str(model), backend=backend)[0].hierarchy


class LiveRun:
    """One live evaluation; :meth:`run` returns its result (written into ``state.folder``)."""

    def __init__(self, opts: EvaluateOptions, reader: FrameReader, state: RunState) -> None:
        self.opts, self.reader, self.state = opts, reader, state
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.node: NodeProcess | None = None
        self.client: LiveClient | None = None
        self.first_publish: int | None = None  # ns
        self.last_publish = 0
        self.completions = (0, 0, 0)  # first / last time (ns) a frame had all outputs, how many
        self.warm_up_frames = 0
        self.wanted_samples: set[int] = set()
        # set once the node answers (run): what _collect / _finalize work with
        self.topics: dict[str, str] = {}
        self.expected: set[str] = set()
        self.store: Any = None
        self.bag: OutputBag | None = None
        self.metrics: SegmentationMetrics | None = None

    def close(self) -> int | None:
        """Close the ROS client, stop the node (SIGINT, as launch does); the node's exit code."""
        if self.client is not None:
            self.client.close()
        return None if self.node is None else self.node.stop()

    # -- playing ------------------------------------------------------------------------------
    def _play(self) -> None:
        scale = self.opts.rate_scale
        t0_wall = bag_t0 = None
        try:
            for frame in self.reader:
                if self.stop.is_set():
                    break
                if t0_wall is None:
                    t0_wall, bag_t0 = time.monotonic(), frame.bag_time_ns
                target = t0_wall + (frame.bag_time_ns - bag_t0) / NS_PER_S / scale
                while not self.stop.is_set() and (wait := target - time.monotonic()) > 0:
                    time.sleep(min(wait, 0.05))
                if self.stop.is_set():
                    break
                msg = deserialize_message(frame.camera_raw, self.client.msg_class)
                if frame.index not in self.wanted_samples:
                    frame.rgb = None  # keep memory flat: only sample frames keep their pixels
                stamp = time.time_ns()
                self.events.put(("in", stamp, frame, time.monotonic()))
                self.client.publish(msg, stamp)
                if self.first_publish is None:
                    self.first_publish = stamp
                self.last_publish = stamp
            self.events.put(("end", None, None, None))
        except BaseException as exc:  # BagError mid-stream, ...
            self.events.put(("error", exc, None, None))

    def run(self) -> BagResult:
        opts, state, info = self.opts, self.state, self.reader.info
        ensure_loopback_env()
        hierarchy = model_hierarchy(opts.model, opts.backend)
        metrics = SegmentationMetrics(hierarchy, opts.dataset)
        store, has_vision = output_typestore()
        topics = output_topics(hierarchy, has_vision and bool(opts.sign_class))
        self.wanted_samples = sample_indices(len(self.reader), opts.samples)
        bag = None
        wall0 = time.monotonic()
        bar = progress_bar(len(self.reader), opts.progress, "live")
        try:
            self.node = start_node(opts, info, state.folder)
            state.sign_rule = effective_parameters(self.node.command, SIGN_RULE)
            self.client = LiveClient(info.camera_topic, info.compressed, topics, self.events)
            self.warm_up_frames = bring_up(
                self.node, self.client, self.reader, topics, self.events, opts.startup_timeout, state.notes
            )
            bag = OutputBag(state.folder / "bag", opts.storage(info.storage), store) if opts.output_bag else None
            self.expected = set(topics)
            self.topics, self.store, self.bag, self.metrics = topics, store, bag, metrics
            player = threading.Thread(target=self._play, name="bag_player", daemon=True)
            play_start = time.monotonic()
            player.start()
            self._collect(bar)
            self.stop.set()
            collected = time.monotonic()
            while self.client.diagnostics_time < collected and time.monotonic() - collected < 2.5:
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
        span = (self.last_publish - self.first_publish) / NS_PER_S if n > 1 else 0.0
        first_done, last_done, n_done = self.completions
        fps = (n_done - 1) * NS_PER_S / (last_done - first_done) if n_done > 1 and last_done > first_done else None
        diag = None if self.client is None else self.client.node_diagnostics
        if diag and diag.get("frames_received", "").isdigit():
            sent = n + self.warm_up_frames
            received, dropped = int(diag["frames_received"]), int(diag.get("frames_dropped", "0") or 0)
            state.notes.append(
                f"node counters: received {received} of {sent} published frames (incl. warm-up), "
                f"{dropped} dropped by its latest-frame policy"
                + (f"; {sent - received} never reached the node (best-effort input)" if sent > received else "")
            )
        if code not in (0, None) and state.reason is None:
            state.fail(f"the node exited with code {code}:\n{self.node.log_tail()}")
        recorded = info.rate_hz
        details = LiveDetails(
            input_rate_hz=(n - 1) / span if span > 0 else None,
            rate_scale=opts.rate_scale,
            target_rate_hz=None if recorded is None else recorded * opts.rate_scale,
            node=NodeDetails(None if self.node is None else self.node.command, code, NODE_LOG, diag),
            first_output_latency_ms=LatencyStats.of(state.first_latencies),
        )
        return finish(
            state,
            metrics,
            fps=fps,
            wall_seconds=play_wall,
            recorded_rate_hz=recorded,
            output_bag=None if bag is None else "bag",
            output_topics=sorted(topics),
            details=details,
        )

    # -- collecting ---------------------------------------------------------------------------
    def _collect(self, bar: Any) -> None:
        state = self.state
        pending: OrderedDict[int, _Pending] = OrderedDict()
        player_done = False
        timeout = self.opts.frame_timeout
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
            if self.node.poll() is not None:
                state.fail(f"the node exited with code {self.node.returncode} during playback:\n{self.node.log_tail()}")
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
            if frame.signs_raw is not None:
                bag.write(self.reader.info.sign_topic, DETECTIONS, frame.signs_bag_time_ns or t, frame.signs_raw)
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

        def rgb_image(topic: str) -> np.ndarray:
            msg = image(topic)
            rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
            return np.ascontiguousarray(rows.reshape(msg.height, msg.width, 3))

        h = self.metrics.hierarchy
        leaf = decode_label(image(f"{ns}/mask"), IMAGE)
        detections: list = []
        if f"{ns}/traffic_signs" in item.outputs:
            detections = decode_signs(store.deserialize_cdr(item.outputs[f"{ns}/traffic_signs"][0], DETECTIONS))
            state.add_signs(frame.signs, detections)
        if frame.label is not None:
            masks = {c: decode_label(image(f"{ns}/{c}/mask"), IMAGE) for c in h.classifier_names}
            try:
                if not self.metrics.add_node_masks(frame.label, masks, leaf):
                    state.inconsistent_masks += 1
            except ValueError as exc:
                state.fail(f"bag {state.bag}, topic {state.label_topic}: {exc}")
            state.with_gt += 1
        else:
            state.without_gt += 1
        if frame.index in self.wanted_samples:
            state.save_sample(frame.index, s, frame.rgb, rgb_image(f"{ns}/overlay"), h, leaf)
        if state.wants_sign_figure(detections):
            state.save_sign_figure(frame.index, s, rgb_image(f"{ns}/overlay"), frame.signs, detections)
