"""The lifecycle node (hiseg_ros.lifecycle_node) driven through its lifecycle services over loopback DDS,
as a lifecycle manager (or ``ros2 lifecycle set``) drives it: configure loads the model, activate
creates the topics, deactivate / cleanup release them, and a failing configure leaves it unconfigured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_helpers import Client, reference_engine, wait_until

from training import REPO
from training.evaluation.bags.node_process import NodeProcess, ensure_loopback_env

pytestmark = pytest.mark.ros

NODE, CAMERA = "hiseg_lc", "/lc/image"
RGB = np.random.default_rng(9).integers(0, 256, (40, 64, 3), dtype=np.uint8)


def _start(name: str, model: Path, log: Path) -> NodeProcess:
    """``python -m hiseg_ros.lifecycle_node`` with loopback DDS (NodeProcess wraps it: stop(), logs)."""
    ensure_loopback_env()
    command = [sys.executable, "-m", "hiseg_ros.lifecycle_node", "--ros-args", "-r", f"__node:={name}"]
    command += ["-p", f"model_path:={model}", "-r", f"image:={CAMERA}", "-p", "outputs:=[mask]"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return NodeProcess(command, log, proc)


def _call(client: Client, srv_type: Any, name: str, request: Any, timeout: float = 180.0) -> Any:
    service = client.node.create_client(srv_type, name)
    try:
        assert service.wait_for_service(timeout_sec=120.0), f"{name} not available"
        future = service.call_async(request)
        assert wait_until(future.done, timeout), f"{name} did not answer in {timeout} s"
        return future.result()
    finally:
        client.node.destroy_client(service)


def _state(client: Client, node: str) -> str:
    from lifecycle_msgs.srv import GetState

    return _call(client, GetState, f"/{node}/get_state", GetState.Request()).current_state.label


def _transition(client: Client, node: str, transition: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition))
    return _call(client, ChangeState, f"/{node}/change_state", request).success


def _topics(client: Client, node: str) -> tuple[set[str], set[str]]:
    # The node's services may answer before its name reaches this client's graph cache (DDS
    # discovery): asking for its topics then raises NodeNameNonExistentError, so wait for the name.
    assert wait_until(lambda: node in client.node.get_node_names(), 20.0), f"{node} never appeared in the graph"
    pubs = {name for name, _ in client.node.get_publisher_names_and_types_by_node(node, "/")}
    subs = {name for name, _ in client.node.get_subscriber_names_and_types_by_node(node, "/")}
    return pubs, subs


def _released(client: Client) -> bool:
    pubs, subs = _topics(client, NODE)
    return f"/{NODE}/mask" not in pubs and CAMERA not in subs


def test_transitions_load_publish_and_release(exported_model, tmp_path):
    from lifecycle_msgs.msg import Transition
    from sensor_msgs.msg import Image

    good = _start(NODE, exported_model, tmp_path / "lc.log")
    bad = _start("hiseg_lc_bad", tmp_path / "missing.onnx", tmp_path / "bad.log")
    client = Client("hiseg_test_lifecycle")
    try:
        assert _state(client, NODE) == "unconfigured"
        pubs, subs = _topics(client, NODE)
        assert f"/{NODE}/mask" not in pubs and CAMERA not in subs and "loaded model" not in good.log_text()

        # a configure that fails (no such model) leaves the node unconfigured, alive, with the reason logged
        assert not _transition(client, "hiseg_lc_bad", Transition.TRANSITION_CONFIGURE)
        assert _state(client, "hiseg_lc_bad") == "unconfigured" and bad.poll() is None
        assert "configure failed: model_path:" in bad.log_text()

        assert _transition(client, NODE, Transition.TRANSITION_CONFIGURE)
        assert _state(client, NODE) == "inactive" and "loaded model" in good.log_text()
        assert CAMERA not in _topics(client, NODE)[1]  # inactive: nothing subscribed yet

        engine = reference_engine(exported_model)
        client.subscribe(Image, f"/{NODE}/mask")
        publisher = client.node.create_publisher(Image, CAMERA, 10)
        for round_ in range(2):  # the second round: after cleanup, configured and activated again
            assert _transition(client, NODE, Transition.TRANSITION_ACTIVATE)
            assert _state(client, NODE) == "active"
            assert wait_until(lambda: CAMERA in _topics(client, NODE)[1], 20.0)
            msg = Image(height=40, width=64, encoding="rgb8", step=64 * 3)
            msg.data = RGB.tobytes()
            msg.header.stamp.sec = 1_700_000_000 + round_

            def mask(stamp=msg.header.stamp) -> Any:
                return next((m for m in client.messages(f"/{NODE}/mask") if m.header.stamp == stamp), None)

            got = wait_until(mask, 45.0, action=lambda msg=msg: publisher.publish(msg))
            assert got is not None, good.log_text()[-2000:]
            leaf = np.frombuffer(bytes(got.data), np.uint8).reshape(40, 64)
            np.testing.assert_array_equal(leaf, engine.infer(RGB).leaf)

            assert _transition(client, NODE, Transition.TRANSITION_DEACTIVATE)
            assert _state(client, NODE) == "inactive"
            assert wait_until(lambda: _released(client), 20.0), _topics(client, NODE)
            assert _transition(client, NODE, Transition.TRANSITION_CLEANUP)
            assert _state(client, NODE) == "unconfigured"
            if round_ == 0:
                assert _transition(client, NODE, Transition.TRANSITION_CONFIGURE)
    finally:
        client.close()
        codes = good.stop(), bad.stop()
    assert codes == (0, 0), good.log_text()[-3000:] + bad.log_text()[-3000:]
    assert "Traceback" not in good.log_text() + bad.log_text()
