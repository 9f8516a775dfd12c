"""An rclpy node in this process, with its own context, spun by a background thread.

The test client (tests/node_helpers.py), the node benchmark (bench/bench_node.py) and the live bag
evaluation talk to the node's process through one of these. DDS must be on loopback before rclpy
starts: tests/conftest.py, bench_node and the bag evaluator apply
:func:`training.evaluation.bags.node_process.ensure_loopback_env` before importing this module.
"""

from __future__ import annotations

import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor


class RosClient:
    """``self.node`` (named ``name``) in a private rclpy context; create publishers / subscriptions on it."""

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # ExternalShutdownException etc. when the client is closed
            return

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the context down."""
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
