"""Helpers of the node tests: a tiny model, the reference engine, a ROS client, polling.

The model is the random-init MobileNetV2 network of iv2018 exported once per session by
``training.export``; the test process runs it with ``hiseg_ros.engines`` (ONNX Runtime) to know
what the node must publish. The node process itself is started with
:class:`training.evaluation.bags.node_process.NodeProcess`, as the benchmark and the live bag
evaluation start it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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
#: What an export's bytes depend on besides its command line (the cache key of :func:`make_model`).
_EXPORT_SOURCES = (
    "training/export.py",
    "hiseg_ros/atomic.py",
    "hiseg_ros/engines/torch_graph.py",
    "hiseg_ros/engines/metadata.py",
    "hiseg_ros/engines/checkpoint.py",
    "hiseg_ros/model",
    "hiseg_ros/hierarchy",
)


def make_model(tmp: Path, hierarchy: Path = HIERARCHY, confidence: bool = True) -> Path:
    """The tiny random-init MobileNetV2 model of ``hierarchy`` (iv2018), exported to ONNX by training.export;
    ``confidence=False``: without the confidence output, as models were exported before it existed.

    With ``HISEG_TEST_MODEL_CACHE=<folder>`` (opt-in, for a loaded machine where an export takes
    minutes) the file is exported once per content of the command, the hierarchy and the exporter's
    sources (:data:`_EXPORT_SOURCES`) into that folder and copied from there afterwards.
    """
    out = tmp / f"{hierarchy.stem}_mnv2{'' if confidence else '_noconf'}.onnx"
    args = ["--random-init", "--hierarchy", str(hierarchy), "--backbone", "mobilenet_v2", "--no-verify"]
    args += [] if confidence else ["--no-confidence"]
    cache = os.environ.get("HISEG_TEST_MODEL_CACHE")
    cached = Path(cache) / f"{out.stem}_{_export_key(args, hierarchy)}.onnx" if cache else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, out)
        return out
    cmd = [sys.executable, "-m", "training.export", *args, "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, timeout=1800, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training.export failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_copy = cached.with_suffix(".partial")
        shutil.copyfile(out, tmp_copy)
        tmp_copy.replace(cached)
    return out


def _export_key(args: list[str], hierarchy: Path) -> str:
    digest = hashlib.sha256(" ".join(args).encode())
    files = [hierarchy]
    for src in _EXPORT_SOURCES:
        path = REPO / src
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for path in files:
        digest.update(str(path).encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


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
