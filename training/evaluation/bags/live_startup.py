"""Bringing the node up for a live run: its process, then matching over DDS, then a warm-up frame.

DDS matching is asynchronous on both ends, so "the process runs" is not "the node answers": the
run starts only once the node subscribes to the camera topic, publishes every output topic, and
has answered one warm-up copy of the bag's first frame on all of them (which also takes the first,
slow, inference). A node that exits or does not get there within ``--startup-timeout`` seconds is
a RuntimeError with the tail of its log.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path

from rclpy.serialization import deserialize_message

from .live_client import LiveClient
from .node_process import NodeProcess, launch_ros_args
from .options import EvaluateOptions
from .output_bag import cdr_stamp
from .read import BagInfo, FrameReader
from .vision_types import DETECTIONS

NODE_LOG = "node.log"


def start_node(opts: EvaluateOptions, info: BagInfo, folder: Path) -> NodeProcess:
    """The node's process as launch/hiseg.launch.py starts it, on the bag's camera topic; its log in ``folder``."""
    image_topic = info.camera_topic[: -len("/compressed")] if info.compressed else info.camera_topic
    ros_args = launch_ros_args(
        opts.model, image_topic, opts.params_file, compressed=info.compressed, extra=opts.node_args
    )
    return NodeProcess.start(ros_args, folder / NODE_LOG)


def bring_up(
    node: NodeProcess,
    client: LiveClient,
    reader: FrameReader,
    topics: dict[str, str],
    events: queue.Queue,
    timeout: float,
    notes: list[str],
) -> int:
    """Wait for matching, then warm up; returns the warm-up frames sent. Output topics the node does
    not publish (traffic_signs without sign detection) are dropped from ``topics``, with a note."""
    deadline = time.monotonic() + timeout
    _wait_matched(node, client, reader.info.camera_topic, topics, timeout, notes)
    return _warm_up(node, client, reader, topics, events, deadline, timeout, notes)


def _wait_matched(
    node: NodeProcess, client: LiveClient, camera: str, topics: dict[str, str], timeout: float, notes: list[str]
) -> None:
    """Until the node subscribes to the camera topic and publishes every output (or fail)."""
    optional = {t for t, m in topics.items() if m == DETECTIONS}
    camera_seen: float | None = None
    missing: list[str] = []

    def ready() -> bool:
        nonlocal camera_seen, missing
        missing = client.unmatched_outputs()
        matched = client.camera_matched()
        if matched and camera_seen is None:
            camera_seen = time.monotonic()
        if matched and not missing:
            return True
        if matched and set(missing) <= optional and time.monotonic() - camera_seen > 3.0:
            for t in missing:
                client.drop_output(t)
                topics.pop(t)
            notes.append(f"the node does not publish {', '.join(missing)}")
            return True
        return False

    node.wait_ready(ready, timeout, lambda: f"subscribe to {camera} / publish {missing}")


def _warm_up(
    node: NodeProcess,
    client: LiveClient,
    reader: FrameReader,
    topics: dict[str, str],
    events: queue.Queue,
    deadline: float,
    timeout: float,
    notes: list[str],
) -> int:
    """Publish the bag's first frame (not counted) until one copy gets every output back.

    Until the node's publishers have matched our subscriptions it skips or loses outputs.
    """
    first = next(iter(FrameReader(reader.bag, reader.info.camera_topic, None, decode=False)), None)
    if first is None:
        return 0
    msg = deserialize_message(first.camera_raw, client.msg_class)
    got: dict[int, set[str]] = {}
    attempts = 0
    while time.monotonic() < deadline:
        node.check_running()
        client.publish(msg, time.time_ns())
        attempts += 1
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            try:
                kind, topic, raw, _ = events.get(timeout=0.05)
            except queue.Empty:
                continue
            if kind == "out":
                seen = got.setdefault(cdr_stamp(raw), set())
                seen.add(topic)
                if seen >= set(topics):
                    time.sleep(0.3)  # outputs of earlier warm-up frames still in flight
                    while not events.empty():
                        events.get_nowait()
                    notes.append(f"warm-up: {attempts} frame(s) before the node answered on all outputs")
                    return attempts
    raise RuntimeError(
        f"the node did not publish all outputs for a warm-up frame within {timeout:g} s:\n{node.log_tail()}"
    )
