"""Helpers of tests/integration/test_node.py: a tiny model, the reference engine, the node process, a ROS client.

The model is the random-initialised MobileNetV2 network of iv2018 exported once per session by
``training.export``; the test process runs it with ``hiseg_ros.engines`` (ONNX Runtime) to know
what the node must publish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import REPO

HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"


# ---------------------------------------------------------------------------- model / engine / process
def make_model(tmp: Path) -> Path:
    """The tiny random-init iv2018 MobileNetV2 model, exported to ONNX by training.export."""
    out = tmp / "iv2018_mnv2.onnx"
    cmd = [sys.executable, "-m", "training.export", "--random-init", "--hierarchy", str(HIERARCHY)]
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


def node_command(ros_args: list[str]) -> list[str]:
    """The node's command line: ``python -m hiseg_ros.node --ros-args ...`` with the venv python."""
    return [sys.executable, "-m", "hiseg_ros.node", "--ros-args", *ros_args]


def start_node(ros_args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    with open(log, "wb") as fh:
        return subprocess.Popen(node_command(ros_args), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, timeout: float = 15.0, sig: int = signal.SIGINT) -> int:
    """Stop the node with ``sig`` (SIGINT as Ctrl-C and launch do, or SIGTERM); its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


# ---------------------------------------------------------------------------- ROS client
class Client:
    """An rclpy node in the test process, spun in a background thread; records received messages."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list[Any]] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # ExternalShutdownException etc. when the client is closed
            return

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

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


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
