"""Inference engines: one interface (:class:`Engine`), three backends (TensorRT, ONNX Runtime, PyTorch).

Importing this package is cheap and works without TensorRT, ONNX Runtime or torch: each backend
imports its runtime when it is constructed. Start with :func:`create_engine`.
"""

from .base import PAD_VALUE_RGB, Decisions, Engine, InputConstraints, InputShapeError, ModelLoadError
from .bindings import ShapeProfile
from .metadata import INPUT_LAYOUT, INPUT_NAME, LEAF_OUTPUT, ModelMetadata
from .select import BACKENDS, BackendChoice, EngineSelectionError, choose_backend, create_engine, model_kind
from .tensorrt_engine import PRECISIONS, TensorRTProbe, TensorRTUnavailableError, probe_tensorrt

__all__ = [
    "BACKENDS",
    "INPUT_LAYOUT",
    "INPUT_NAME",
    "LEAF_OUTPUT",
    "PAD_VALUE_RGB",
    "PRECISIONS",
    "BackendChoice",
    "Decisions",
    "Engine",
    "EngineSelectionError",
    "InputConstraints",
    "InputShapeError",
    "ModelLoadError",
    "ModelMetadata",
    "ShapeProfile",
    "TensorRTProbe",
    "TensorRTUnavailableError",
    "choose_backend",
    "create_engine",
    "model_kind",
    "probe_tensorrt",
]
