"""The segmentation node: camera images in, hierarchical segmentation outputs out.

``segmentation_node`` (console script) / ``python -m hiseg_ros.node``; the lifecycle variant is
``hiseg_ros.lifecycle_node``. The node holds no ML logic: the engine (``hiseg_ros.engines``) turns
an RGB image into per-classifier decisions and the leaf map, ``hiseg_ros.outputs.render`` turns
those into masks, colours, overlay and sign instances, ``hiseg_ros.messages`` maps the sign
instances to Detection2D. ``hiseg_ros.segmenter`` loads the engine from the parameters,
``hiseg_ros.frame_pipeline`` owns the topics and the per-frame work, and this module is the plain
node around them. The parameters (table, checks, parameter file) live in ``hiseg_ros.node_params``.

Topics (relative names; remap ``image`` to the camera topic):

- in: ``image`` (sensor_msgs/Image), or ``<resolved image>/compressed`` (sensor_msgs/CompressedImage)
  when ``use_compressed`` is true (the image_transport naming).
- out, all with the input header, at input resolution:
  ``~/<classifier>/mask`` (mono8 class indices, 255 outside the parent class; ``~/root/mask`` for
  the root classifier) and ``~/<classifier>/colored`` (rgb8: each class in its colour, black outside
  the parent class; what RViz shows), ``~/mask`` (leaf ids, mono8, or mono16 when the hierarchy has
  leaf ids above 254), ``~/colored`` (rgb8), ``~/overlay`` (rgb8), ``~/traffic_signs``
  (vision_msgs/Detection2DArray: one Detection2D per sign instance, ``id`` empty (no tracking
  across frames), ``results[0].hypothesis.class_id`` = the LEAF NAME of the majority class, e.g.
  ``sign-speed-limit-30``, ``score`` = the majority fraction; the sign classes are those the
  hierarchy declares ``traffic_sign: true``, or ``sign_class``);
  ``~/<classifier>/label_info`` and ``~/label_info`` (vision_msgs/LabelInfo, transient local,
  published once: class index / leaf id -> class name, plus 255 (or 65535) ``unlabeled``);
  with ``label_remap_path`` (a table of ``config/label_remaps/``) also ``~/remapped/mask`` (mono8:
  the leaf map in the table's label space, 255 void) and ``~/remapped/label_info`` (its classes);
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` seconds: counters,
  input frequency, stale input, header-stamp delay, latency; ``hiseg_ros.diagnostics``).

Only outputs with subscribers are computed. The subscription callback stores the newest message;
a worker thread processes the newest one, and a message overwritten before the worker took it is
counted as dropped. The model is loaded before the subscription is created. An image size the
engine can never take (outside a TensorRT profile, or a fixed-size model) is one error, logged
once per size and held in /diagnostics, naming the parameters that fix it. Exit codes: 0 after
SIGINT / SIGTERM, 1 when the model / hierarchy cannot be loaded, 2 for invalid parameters.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from .frame_pipeline import DETECTION_TYPES, FramePipeline
from .messages import NODE_NAME
from .node_params import PARAMETERS, ConfigurationError
from .ros_params import declare_parameters, on_set_parameters
from .segmenter import Segmenter

__all__ = ["DETECTION_TYPES", "NODE_NAME", "PARAMETERS", "SegmentationNode", "main"]


class OwnsSegmenter:
    """``destroy_node`` for a node holding a :class:`FramePipeline` and a :class:`Segmenter`
    (the plain and the lifecycle node): stop the pipeline, destroy the rcl node, then release the
    engine, in that order (no frame callback may run on a closed engine). A mixin before the rclpy
    node class, so ``super().destroy_node()`` is that class's."""

    pipeline: FramePipeline | None
    segmenter: Segmenter | None

    def destroy_node(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        super().destroy_node()  # type: ignore[misc]
        self.release_segmenter()

    def release_segmenter(self) -> None:
        if self.segmenter is not None:
            self.segmenter.close()
            self.segmenter = None


class SegmentationNode(OwnsSegmenter, Node):
    """See the module docstring. Raises :class:`ConfigurationError` from the constructor."""

    def __init__(self, **kwargs: Any) -> None:
        self.pipeline: FramePipeline | None = None
        self.segmenter: Segmenter | None = None
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._params = declare_parameters(self)
            self.add_on_set_parameters_callback(on_set_parameters(self._params))
            self.segmenter = Segmenter.load(self._params, self.get_logger())
            self.pipeline = FramePipeline(self, self.segmenter, self._params)
        except BaseException:
            # A constructor that fails after Node.__init__ must not leave the rcl node behind:
            # an undestroyed node can keep rclpy's shutdown (and so the process exit) waiting.
            self.destroy_node()
            raise

    @property
    def engine(self) -> Any:
        return None if self.segmenter is None else self.segmenter.engine


def run(node_factory: Any, name: str, args: list[str] | None = None) -> int:
    """Spin the node ``node_factory()`` makes until SIGINT / SIGTERM; the process exit code."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except ConfigurationError as exc:
        rclpy.logging.get_logger(name).fatal(str(exc))  # console logging goes to stderr
        code = exc.exit_code
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT / SIGTERM; returns (and exits with) the process exit code."""
    return run(SegmentationNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
