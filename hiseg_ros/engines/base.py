"""The one interface every inference backend implements (TensorRT, ONNX Runtime, PyTorch).

The node only ever sees :class:`Engine`: ``infer(rgb) -> Decisions``. Input checking, padding to
the network stride and cropping back, and the single-image / batch convenience live here once, so
the backends only implement :meth:`Engine._run` on a contiguous ``B x H x W x 3`` uint8 batch and
cannot drift apart in those details.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from ..hierarchy import Hierarchy

__all__ = [
    "CONFIDENCE",
    "PAD_VALUE_RGB",
    "Decisions",
    "Engine",
    "InputConstraints",
    "InputShapeError",
    "ModelLoadError",
]

PAD_VALUE_RGB: tuple[int, int, int] = (124, 116, 104)
"""Padding colour: ``round(255 * IMAGENET_MEAN_RGB)``, i.e. ~0 after normalisation, the most neutral
input. Spelled out rather than imported because ``hiseg_ros.model`` imports torch, which the ONNX
Runtime and TensorRT paths must not need (a test checks the two stay equal)."""


CONFIDENCE = "confidence"
"""Output key of the chosen leaf's probability in :meth:`Engine._run`'s result (the graph output's name)."""


class ModelLoadError(RuntimeError):
    """A model, engine or checkpoint cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class InputShapeError(ValueError):
    """An image the engine cannot take (dtype, channels, size outside the engine's range)."""


@dataclass(frozen=True)
class Decisions:
    """Result of one inference, at the input resolution.

    ``per_classifier[name]``: uint8 class indices of that classifier at every pixel (computed
    everywhere, also where the pixel's path does not go through it: use
    ``Hierarchy.classifier_masks`` to blank those). ``leaf``: flattened leaf ids with the
    hierarchy's ``mask_dtype``. ``confidence``: float32 probability of the chosen leaf (the product
    of the classifiers' softmax probabilities along the decision path), only when asked for and the
    model has it. Arrays are ``H x W`` for a single image, ``B x H x W`` for a batch.
    """

    per_classifier: dict[str, np.ndarray]
    leaf: np.ndarray
    confidence: np.ndarray | None = None


@dataclass(frozen=True)
class InputConstraints:
    """Which image sizes an engine takes and how it treats sizes that are not a stride multiple.

    ``min_hw`` / ``max_hw`` bound the size fed to the network (after padding); ``max_hw=None`` is
    unbounded. ``pad_multiple > 1`` means the engine pads bottom / right with :data:`PAD_VALUE_RGB`
    up to a multiple of it and crops the outputs back (exact feature-cell alignment); 1 means the
    image goes in as is (the network's nearest upsampling then stretches by under one cell).
    """

    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None
    opt_hw: tuple[int, int] | None = None
    max_batch: int | None = None
    pad_multiple: int = 1
    output_stride: int = 16

    @property
    def dynamic(self) -> bool:
        return self.max_hw is None or self.min_hw != self.max_hw

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        return None if self.dynamic else self.min_hw

    def padded_hw(self, height: int, width: int) -> tuple[int, int]:
        m = self.pad_multiple
        return (-(-height // m) * m, -(-width // m) * m)

    def check(self, height: int, width: int, batch: int = 1) -> None:
        """Raise :class:`InputShapeError` unless a ``batch x height x width`` input is accepted."""
        if height < 1 or width < 1 or batch < 1:
            raise InputShapeError(f"empty input: batch {batch}, {height}x{width} pixels")
        ph, pw = self.padded_hw(height, width)
        padded = f" (padded to {ph}x{pw})" if (ph, pw) != (height, width) else ""
        if ph < self.min_hw[0] or pw < self.min_hw[1]:
            raise InputShapeError(f"image {height}x{width}{padded} is smaller than the engine minimum {self.min_hw}")
        if self.max_hw is not None and (ph > self.max_hw[0] or pw > self.max_hw[1]):
            raise InputShapeError(f"image {height}x{width}{padded} is larger than the engine maximum {self.max_hw}")
        if self.max_batch is not None and batch > self.max_batch:
            raise InputShapeError(f"batch of {batch} images exceeds the engine maximum {self.max_batch}")


class Engine(abc.ABC):
    """Runs an exported hierarchical model on uint8 RGB images.

    Subclasses set ``hierarchy``, ``name`` and ``input_constraints`` in their constructor (loading
    everything up front, raising :class:`ModelLoadError`) and implement :meth:`_run`.
    """

    def __init__(
        self, hierarchy: Hierarchy, name: str, constraints: InputConstraints, has_confidence: bool = False
    ) -> None:
        self._hierarchy = hierarchy
        self._name = name
        self._constraints = constraints
        self._has_confidence = has_confidence

    @property
    def hierarchy(self) -> Hierarchy:
        return self._hierarchy

    @property
    def name(self) -> str:
        """Human-readable backend description, e.g. ``onnxruntime[CPUExecutionProvider]``."""
        return self._name

    @property
    def input_constraints(self) -> InputConstraints:
        return self._constraints

    @property
    def classifier_names(self) -> tuple[str, ...]:
        return self._hierarchy.classifier_names

    @property
    def has_confidence(self) -> bool:
        """Whether the model computes the per-pixel confidence (models exported before it did not)."""
        return self._has_confidence

    def infer(self, image: np.ndarray, confidence: bool = False) -> Decisions:
        """``H x W x 3`` (or ``B x H x W x 3``) uint8 RGB -> :class:`Decisions` at the same size.

        A C-contiguous input is used without copying (a batch axis is added as a view); a strided
        view (e.g. ``bgr8`` reversed channels) is made contiguous once. ``confidence``: also return
        the confidence map (ignored when the model has none: ``Decisions.confidence`` is then None).
        """
        batch, single = _as_batch(image)
        b, h, w = batch.shape[:3]
        self._constraints.check(h, w, b)
        ph, pw = self._constraints.padded_hw(h, w)
        if (ph, pw) != (h, w):
            padded = np.empty((b, ph, pw, 3), np.uint8)
            padded[:] = np.asarray(PAD_VALUE_RGB, np.uint8)
            padded[:, :h, :w] = batch
            batch = padded
        confidence = confidence and self._has_confidence
        outputs = self._run(batch, confidence)
        expected = (*self.classifier_names, "leaf", *((CONFIDENCE,) if confidence else ()))
        missing = [n for n in expected if n not in outputs]
        if missing:
            raise RuntimeError(f"{self._name}: backend returned no output for {missing}")

        def crop(a: np.ndarray) -> np.ndarray:
            a = a[:, :h, :w]
            return a[0] if single else a

        return Decisions(
            {n: crop(outputs[n]) for n in self.classifier_names},
            crop(outputs["leaf"]),
            crop(outputs[CONFIDENCE]) if confidence else None,
        )

    @abc.abstractmethod
    def _run(self, batch: np.ndarray, confidence: bool) -> Mapping[str, np.ndarray]:
        """C-contiguous ``B x H x W x 3`` uint8 -> ``{classifier: B x H x W uint8, "leaf": ...}``,
        plus ``"confidence"`` (float32) when ``confidence`` (only asked of a model that has it)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release backend resources (device memory, streams). Default: nothing to release."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} hierarchy={self._hierarchy.name!r}>"


def _as_batch(image: np.ndarray) -> tuple[np.ndarray, bool]:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputShapeError(f"expected uint8 RGB, got dtype {image.dtype}")
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise InputShapeError(f"expected H x W x 3 or B x H x W x 3 RGB, got shape {image.shape}")
    single = image.ndim == 3
    batch = np.ascontiguousarray(image)
    return (batch[None] if single else batch), single
