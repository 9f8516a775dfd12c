"""The segmentation node as a managed (lifecycle) node, for vehicle stacks that orchestrate start-up.

``segmentation_lifecycle_node`` (console script) / ``python -m hiseg_ros.lifecycle_node``. Same
parameters, topics and per-frame work as the plain node (``hiseg_ros.node``, the default), which
this module shares (``hiseg_ros.segmenter``, ``hiseg_ros.frame_pipeline``) instead of copying.
It starts ``unconfigured`` and does nothing until a lifecycle manager (or
``ros2 lifecycle set /segmentation_node configure``) drives it:

- ``configure``: declare and check the parameters, load the model, build the engine (a TensorRT
  build can take minutes); a bad parameter or model is logged and the transition FAILS, the node
  stays ``unconfigured`` and can be configured again;
- ``activate``: create the publishers (LabelInfo latched), diagnostics and the image subscription;
- ``deactivate``: destroy the subscription and the publishers (the frame in progress is finished);
- ``cleanup``: release the engine; ``shutdown`` / ``error``: release whatever exists.

Exit codes: 0 after SIGINT / SIGTERM (also from ``unconfigured``).
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .frame_pipeline import FramePipeline
from .messages import NODE_NAME
from .node import OwnsSegmenter, run
from .node_params import ConfigurationError
from .ros_params import declare_parameters, on_set_parameters
from .segmenter import Segmenter

__all__ = ["LifecycleSegmentationNode", "main"]


class LifecycleSegmentationNode(OwnsSegmenter, LifecycleNode):
    """See the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._params: dict[str, Any] = {}
        self.add_on_set_parameters_callback(on_set_parameters(self._params))
        self.segmenter: Segmenter | None = None
        self.pipeline: FramePipeline | None = None

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._params.update(declare_parameters(self))
            self.segmenter = Segmenter.load(self._params, self.get_logger())
        except ConfigurationError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.segmenter is not None  # activate is only reachable from inactive
        try:
            self.pipeline = FramePipeline(self, self.segmenter, self._params)
        except ConfigurationError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close_pipeline()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _close_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def _release(self) -> None:
        self._close_pipeline()
        self.release_segmenter()


def main(args: list[str] | None = None) -> int:
    """Run the lifecycle node until SIGINT / SIGTERM; returns (and exits with) the process exit code."""
    return run(LifecycleSegmentationNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
