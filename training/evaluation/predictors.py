"""Predictors for ``python -m training.evaluation.evaluate --predictor training.evaluation.predictors:engine``.

An evaluation should run the model exactly as the vehicle will, so the predictor is one of the
runtime engines (ONNX Runtime, TensorRT, or PyTorch for a training checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hiseg_ros.engines import create_engine
from hiseg_ros.hierarchy import Hierarchy


class EnginePredictor:
    """image -> per-classifier decisions of a runtime engine; checks the model's hierarchy."""

    def __init__(self, hierarchy: Hierarchy, model: str, backend: str = "auto", precision: str = "fp32") -> None:
        self.engine, self.reason = create_engine(model, backend=backend, precision=precision)
        if self.engine.hierarchy != hierarchy:
            raise ValueError(
                f"{model}: the model's hierarchy {self.engine.hierarchy.name!r} differs from the evaluated "
                f"hierarchy {hierarchy.name!r}"
            )

    def __call__(self, image: np.ndarray) -> Mapping[str, np.ndarray]:
        return self.engine.infer(image).per_classifier


def engine(hierarchy: Hierarchy, model: str, backend: str = "auto", precision: str = "fp32") -> EnginePredictor:
    """Factory for ``--predictor training.evaluation.predictors:engine --predictor-arg model=PATH [backend=...]``."""
    return EnginePredictor(hierarchy, model, backend, precision)
