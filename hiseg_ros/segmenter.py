"""What the node builds from its parameters before it touches a topic: the engine and what the model implies.

:meth:`Segmenter.load` is the slow, failure-prone part of start-up (the plain node's constructor,
the lifecycle node's ``configure``): the engine is created (a TensorRT engine may be built), the
model's hierarchy is checked against ``hierarchy_path``, the traffic-sign classes and the optional
label remap table are resolved, and a camera / network size the engine can never take is refused.
Every failure is one :class:`~hiseg_ros.node_params.ConfigurationError` naming the parameter (and
the file and key), with the exit code main() returns. No ROS import: testable without DDS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import outputs
from .engines import ShapeProfile, create_engine
from .hierarchy import Hierarchy, HierarchyError, load_hierarchy
from .label_remap import LabelRemap, LabelRemapError, load_label_remap
from .node_params import EXIT_MODEL_ERROR, EXIT_PARAMETER_ERROR, ConfigurationError, input_problem, shape_profile

__all__ = ["Segmenter", "load_engine"]


class _Logger(Protocol):
    def info(self, message: str) -> Any: ...


def load_engine(p: Mapping[str, Any], profile: ShapeProfile | None) -> tuple[Any, str]:
    """``hiseg_ros.engines.create_engine`` with the node's parameters ``p``; ConfigurationError on failure."""
    model_path, backend = p["model_path"], p["backend"]
    if not os.path.isfile(model_path):
        raise ConfigurationError(f"model_path: {model_path!r} does not exist or is not a file", EXIT_MODEL_ERROR)
    try:
        return create_engine(
            model_path,
            backend=backend,
            precision=p["precision"],
            cache_dir=p["engine_cache_dir"] or None,
            calibration_dir=p["int8_calibration_dir"] or None,
            spin_wait=p["cpu_spin_wait"],
            profile=profile,
            device=p["device"],
        )
    except Exception as exc:  # ModelLoadError, EngineSelectionError and whatever a corrupt file makes a backend raise
        raise ConfigurationError(
            f"cannot load model {model_path!r} with backend {backend!r} on device {p['device']!r}: "
            f"{type(exc).__name__}: {exc}",
            EXIT_MODEL_ERROR,
        ) from exc


@dataclass
class Segmenter:
    """The loaded engine and what the parameters derive from its model; :meth:`close` releases the engine."""

    engine: Any
    hierarchy: Hierarchy
    sign_lut: np.ndarray | None  # outputs.sign_leaf_lut; None = no ~/traffic_signs
    remap: LabelRemap | None  # label_remap_path's table; None = no ~/remapped/*
    target: tuple[int, int] | None  # (height, width) the image is fitted into (resize.policy fit)

    @classmethod
    def load(cls, p: Mapping[str, Any], logger: _Logger) -> Segmenter:
        """Create the engine and check the model against the parameters; raises ConfigurationError."""
        t0 = time.monotonic()
        engine, reason = load_engine(p, shape_profile(p))
        try:
            return cls._derive(engine, reason, time.monotonic() - t0, p, logger)
        except BaseException:
            engine.close()
            raise

    @classmethod
    def _derive(cls, engine: Any, reason: str, load_s: float, p: Mapping[str, Any], logger: _Logger) -> Segmenter:
        h = engine.hierarchy
        _check_hierarchy(h, p["hierarchy_path"])
        backend_name = getattr(engine, "name", type(engine).__name__)
        logger.info(
            f"loaded model {p['model_path']} (hierarchy {h.name!r}: classifiers "
            f"{', '.join(f'{n}[{c}]' for n, c in h.classifier_sizes)}, {len(h.leaves)} leaves) "
            f"with backend {backend_name} ({reason}) in {load_s:.2f} s"
        )
        target = (p["resize.height"], p["resize.width"]) if p["resize.policy"] == "fit" else None
        expected = target or ((p["camera.height"], p["camera.width"]) if p["camera.height"] else None)
        why = input_problem(engine.input_constraints, *expected) if expected else None
        if why:
            raise ConfigurationError(f"camera.width / camera.height / resize: {why}", EXIT_PARAMETER_ERROR)
        if p["confidence.threshold"] > 0.0 and not engine.has_confidence:
            raise ConfigurationError(
                f"confidence.threshold: {p['confidence.threshold']} needs a model with the confidence output; "
                f"{p['model_path']} was exported without it (re-export it with python -m training.export)",
                EXIT_PARAMETER_ERROR,
            )
        remap = None
        if p["label_remap_path"]:
            try:
                remap = load_label_remap(p["label_remap_path"], h)
            except LabelRemapError as exc:
                raise ConfigurationError(f"label_remap_path: {exc}", EXIT_PARAMETER_ERROR) from exc
            logger.info(f"label remap {remap.name!r} ({len(remap.classes)} classes) from {remap.source}")
        return cls(engine, h, _sign_classes(h, p["sign_class"], logger), remap, target)

    def close(self) -> None:
        self.engine.close()


def _sign_classes(h: Hierarchy, override: str, logger: _Logger) -> np.ndarray | None:
    """The sign LUT: the hierarchy's ``traffic_sign: true`` classes, or ``sign_class`` when given."""
    if not override and not h.traffic_sign_classes:
        logger.info(f"hierarchy {h.name!r} declares no traffic_sign class and sign_class is '': no ~/traffic_signs")
        return None
    try:
        lut = outputs.sign_leaf_lut(h, override)
    except KeyError as exc:
        raise ConfigurationError(
            f"sign_class: {exc.args[0]}; set sign_class to one of its classes, or '' to use the classes "
            f"the hierarchy declares traffic_sign: true ({', '.join(h.traffic_sign_classes) or 'none'})",
            EXIT_PARAMETER_ERROR,
        ) from exc
    logger.info(f"traffic signs: the leaves under {override or ', '.join(h.traffic_sign_classes)}")
    return lut


def _check_hierarchy(got: Hierarchy, path: str) -> None:
    if not path:
        return
    try:
        expected = load_hierarchy(path)
    except HierarchyError as exc:
        raise ConfigurationError(f"hierarchy_path: {exc}", EXIT_MODEL_ERROR) from exc
    if expected.classifier_sizes != got.classifier_sizes or [c.id for c in expected.leaves] != [
        c.id for c in got.leaves
    ]:
        raise ConfigurationError(
            f"hierarchy_path: {path} ({expected.name}: {expected.classifier_sizes}) does not match the model's "
            f"hierarchy ({got.name}: {got.classifier_sizes})",
            EXIT_MODEL_ERROR,
        )
