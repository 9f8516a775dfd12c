"""Helpers of the node tests: a tiny model, the reference engine, a ROS client, polling.

The model is the random-init MobileNetV2 network of iv2018 exported once per session by
``training.export``; the test process runs it with ``hiseg_ros.engines`` (ONNX Runtime) to know
what the node must publish. The node process itself is started with
:class:`training.evaluation.bags.node_process.NodeProcess`, as the benchmark and the live bag
evaluation start it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import REPO
from training.evaluation.bags.ros_client import RosClient

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"


# ---------------------------------------------------------------------------- model / engine
def make_model(tmp: Path, hierarchy: Path = HIERARCHY) -> Path:
    """The tiny random-init MobileNetV2 model of ``hierarchy`` (iv2018), exported to ONNX by training.export."""
    out = tmp / f"{hierarchy.stem}_mnv2.onnx"
    cmd = [sys.executable, "-m", "training.export", "--random-init", "--hierarchy", str(hierarchy)]
    cmd += ["--backbone", "mobilenet_v2", "--out", str(out), "--no-verify"]
    done = subprocess.run(cmd, cwd=REPO, timeout=300, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training.export failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out


def reference_engine(model: Path) -> Any:
    """The engine the node uses (``backend auto`` is ONNX Runtime where TensorRT is missing)."""
    from hiseg_ros.engines import create_engine

    engine, _ = create_engine(str(model), backend="onnxruntime")
    return engine


# ---------------------------------------------------------------------------- ROS client
class Client(RosClient):
    """A ROS client in the test process that records every message it receives, per topic."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.lock = threading.Lock()
        self.received: dict[str, list[Any]] = {}

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> None:
        with self.lock:
            self.received.setdefault(topic, [])

        def callback(msg: Any, topic: str = topic) -> None:
            with self.lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, callback, qos)

    def messages(self, topic: str) -> list[Any]:
        with self.lock:
            return list(self.received.get(topic, []))


def wait_until(
    predicate: Callable[[], Any], timeout: float, every: float = 0.05, action: Callable[[], None] | None = None
):
    """Poll ``predicate`` until truthy (returned) or ``timeout`` (None); run ``action`` every ~0.25 s."""
    end = time.monotonic() + timeout
    next_action = 0.0
    while time.monotonic() < end:
        if action is not None and time.monotonic() >= next_action:
            action()
            next_action = time.monotonic() + 0.25
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def get_parameters(client: RosClient, node: str, names: list[str], timeout: float = 20.0) -> dict[str, Any]:
    """Values of ``node``'s parameters ``names`` through its ``get_parameters`` service (as ``ros2 param get``)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    service = client.node.create_client(GetParameters, f"{node}/get_parameters")
    try:
        if not service.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{node}/get_parameters not available after {timeout} s")
        future = service.call_async(GetParameters.Request(names=names))
        done = wait_until(future.done, timeout)
        if not done:
            raise TimeoutError(f"{node}/get_parameters did not answer in {timeout} s")
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values, strict=True)}
    finally:
        client.node.destroy_client(service)
