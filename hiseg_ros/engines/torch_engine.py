"""PyTorch backend: a training checkpoint run eagerly, for debugging and for checking the exports.

It runs :class:`~hiseg_ros.engines.torch_graph.DecisionGraph`, the module the exporter exports, so
its decisions are the reference the other backends are compared with. torch is imported only when
this backend is constructed (the ONNX / TensorRT paths do not need it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .base import CONFIDENCE, Engine, InputConstraints, ModelLoadError

__all__ = ["TorchEngine"]


class TorchEngine(Engine):
    """A checkpoint of the ``hiseg_ros.engines.checkpoint`` contract on ``device`` (``cpu``, ``cuda:0``)."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        pad_to_stride: bool = False,
    ) -> None:
        import torch

        from .checkpoint import CheckpointFormatError, load_checkpoint
        from .torch_graph import DecisionGraph

        path = Path(checkpoint_path)
        try:
            loaded = load_checkpoint(path)
        except CheckpointFormatError as exc:
            raise ModelLoadError(path, str(exc).removeprefix(f"{path}: ")) from None
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide in torch: only touched when asked for
        self._torch = torch
        self._device = torch.device(device)
        self._graph = DecisionGraph(loaded.net, loaded.hierarchy, confidence=True).eval().to(self._device)
        self._outputs = (*loaded.hierarchy.classifier_names, "leaf", CONFIDENCE)
        self.checkpoint = loaded
        stride = loaded.config.output_stride
        constraints = InputConstraints(pad_multiple=stride if pad_to_stride else 1, output_stride=stride)
        super().__init__(loaded.hierarchy, f"torch[{self._device}]", constraints, has_confidence=True)

    def _run(self, batch: np.ndarray, confidence: bool) -> Mapping[str, np.ndarray]:
        torch = self._torch
        with warnings.catch_warnings():
            # A read-only numpy view (ROS message buffer) is fine: the graph never writes its input.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(batch)
        self._graph.confidence = confidence  # the eager graph skips what is not asked for
        with torch.inference_mode():
            values = self._graph(tensor.to(self._device))
        return {name: value.cpu().numpy() for name, value in zip(self._outputs, values, strict=False)}
