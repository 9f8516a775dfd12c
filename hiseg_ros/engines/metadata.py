"""What an exported model says about itself (ONNX ``metadata_props``), written by the exporter and
read by every engine: a model file alone must be enough for the node.

Keys (all values are strings):

=========================  ==============================================================
``hiseg.format_version``   :data:`FORMAT_VERSION`; an engine refuses other versions
``hiseg.hierarchy``        ``Hierarchy.to_json()`` of the hierarchy the model was trained on
``hiseg.classifiers``      JSON list of the classifier outputs, in output order (root first)
``hiseg.leaf_output``      name of the flattened leaf output (:data:`LEAF_OUTPUT`)
``hiseg.leaf_dtype``       ``uint8`` or ``uint16`` (the hierarchy's ``mask_dtype``)
``hiseg.confidence_output`` optional: name of the float32 confidence output after ``leaf`` (models
                           exported before it existed have none; engines feature-detect it)
``hiseg.input_layout``     :data:`INPUT_LAYOUT`: ``B x H x W x 3`` uint8 RGB, named ``image``
``hiseg.backbone``         e.g. ``mobilenet_v2``
``hiseg.output_stride``    e.g. ``16``
``hiseg.model_config``     JSON of the network configuration (see ``engines.checkpoint``)
``hiseg.decision``         how decisions are made (argmax at feature resolution + nearest)
``hiseg.provenance``       JSON: which tool exported what, from which checkpoint, when
=========================  ==============================================================

Kept free of onnx / onnxruntime imports at module level so the cheap parts stay cheap;
:func:`read_onnx_metadata` imports ``onnx`` when called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..hierarchy import Hierarchy, HierarchyError
from .base import ModelLoadError

__all__ = [
    "DECISION_RULE",
    "FORMAT_VERSION",
    "INPUT_LAYOUT",
    "INPUT_NAME",
    "LEAF_OUTPUT",
    "ModelMetadata",
    "read_onnx_metadata",
]

FORMAT_VERSION = "1"
INPUT_NAME = "image"
INPUT_LAYOUT = "uint8_nhwc_rgb"
LEAF_OUTPUT = "leaf"
DECISION_RULE = "argmax_nearest+hierarchy_flatten"
_PREFIX = "hiseg."
_REQUIRED = ("format_version", "hierarchy", "classifiers", "input_layout", "backbone", "output_stride")


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed ``hiseg.*`` metadata of a model; :meth:`from_props` validates everything."""

    hierarchy: Hierarchy
    classifiers: tuple[str, ...]
    backbone: str
    output_stride: int
    provenance: str = ""
    model_config: Mapping[str, Any] | None = None
    leaf_output: str = LEAF_OUTPUT
    input_layout: str = INPUT_LAYOUT
    format_version: str = FORMAT_VERSION
    confidence_output: str = ""  # "" = the model has no confidence output

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph outputs in order: one decision map per classifier, the leaf map, then the confidence (if any)."""
        return (*self.classifiers, self.leaf_output, *((self.confidence_output,) if self.confidence_output else ()))

    @property
    def leaf_dtype(self) -> np.dtype:
        return np.dtype(self.hierarchy.mask_dtype)

    def to_props(self) -> dict[str, str]:
        props = {
            "format_version": self.format_version,
            "hierarchy": self.hierarchy.to_json(),
            "classifiers": json.dumps(list(self.classifiers)),
            "leaf_output": self.leaf_output,
            "leaf_dtype": self.leaf_dtype.name,
            "input_layout": self.input_layout,
            "backbone": self.backbone,
            "output_stride": str(self.output_stride),
            "decision": DECISION_RULE,
            "provenance": self.provenance,
        }
        if self.confidence_output:
            props["confidence_output"] = self.confidence_output
        if self.model_config is not None:
            props["model_config"] = json.dumps(dict(self.model_config), sort_keys=True)
        return {_PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | Path) -> ModelMetadata:
        """Parse ``hiseg.*`` props; any problem is a :class:`ModelLoadError` naming ``source``."""
        values = {k[len(_PREFIX) :]: v for k, v in props.items() if k.startswith(_PREFIX)}
        missing = [_PREFIX + k for k in _REQUIRED if k not in values]
        if missing:
            hint = " (not exported by training.export?)" if len(missing) == len(_REQUIRED) else ""
            raise ModelLoadError(source, f"model metadata lacks {', '.join(missing)}{hint}")
        if values["format_version"] != FORMAT_VERSION:
            raise ModelLoadError(
                source, f"model format version {values['format_version']!r}, this node reads {FORMAT_VERSION!r}"
            )
        if values["input_layout"] != INPUT_LAYOUT:
            raise ModelLoadError(source, f"input layout {values['input_layout']!r}, expected {INPUT_LAYOUT!r}")
        try:
            hierarchy = Hierarchy.from_json(values["hierarchy"], source=f"{source}: metadata hiseg.hierarchy")
        except HierarchyError as exc:
            raise ModelLoadError(source, f"corrupt hierarchy metadata: {exc}") from None
        classifiers = _json_value(values["classifiers"], "classifiers", source)
        if not isinstance(classifiers, list) or not all(isinstance(c, str) for c in classifiers):
            raise ModelLoadError(source, "metadata hiseg.classifiers is not a JSON list of names")
        if tuple(classifiers) != hierarchy.classifier_names:
            raise ModelLoadError(
                source,
                f"metadata classifiers {classifiers} do not match the hierarchy's {list(hierarchy.classifier_names)}",
            )
        leaf_dtype = values.get("leaf_dtype", np.dtype(hierarchy.mask_dtype).name)
        if leaf_dtype != np.dtype(hierarchy.mask_dtype).name:
            raise ModelLoadError(source, f"leaf dtype {leaf_dtype} does not fit hierarchy {hierarchy.name!r}")
        try:
            output_stride = int(values["output_stride"])
        except ValueError:
            raise ModelLoadError(source, f"output stride {values['output_stride']!r} is not an integer") from None
        config = _json_value(values["model_config"], "model_config", source) if "model_config" in values else None
        return cls(
            hierarchy=hierarchy,
            classifiers=tuple(classifiers),
            backbone=values["backbone"],
            output_stride=output_stride,
            provenance=values.get("provenance", ""),
            model_config=config,
            leaf_output=values.get("leaf_output", LEAF_OUTPUT),
            input_layout=values["input_layout"],
            format_version=values["format_version"],
            confidence_output=values.get("confidence_output", ""),
        )


def _json_value(text: str, key: str, source: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(source, f"metadata {_PREFIX}{key} is not valid JSON: {exc}") from None


def read_onnx_metadata(model_bytes: bytes, source: str | Path) -> ModelMetadata:
    """Metadata of serialized ONNX bytes (the TensorRT path, which has no ONNX Runtime session)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(model_bytes)
    except (DecodeError, ValueError) as exc:
        raise ModelLoadError(source, f"not a readable ONNX model: {exc}") from None
    if not model.graph.node:
        raise ModelLoadError(source, "not a readable ONNX model: the graph is empty")
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)
