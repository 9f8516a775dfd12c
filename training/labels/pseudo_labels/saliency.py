"""Class-agnostic saliency: "where is an object", two interchangeable sources.

* :class:`LearnedSaliency`: a foreground segmenter trained on the per-pixel datasets (the L-Net /
  TransferNet idea: objectness learned on strongly labelled categories transfers to weakly
  labelled ones). Foreground = the "thing" classes, see :data:`VISTAS_FOREGROUND_PREFIXES` and
  :data:`CITYSCAPES_FOREGROUND_IDS`: people, riders, every vehicle, traffic lights, traffic signs
  (front and back) and the poles / sign frames that carry them. Poles are included because signs and
  lights sit on them and Xu et al.'s saliency must not veto a sign's attention at its boundary; the
  flat stuff, buildings, vegetation and sky are background.
* :class:`OpenCVSaliency`: training-free detectors of OpenCV's contrib ``saliency`` module
  (``spectral_residual``: Hou & Zhang 2007; ``fine_grained``: Montabone & Soto 2010).

Every source maps an RGB uint8 ``H x W x 3`` image to float32 ``H x W`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from hiseg_ros.model import normalize_image
from training.data.readers.base import Sample
from training.labels.pseudo_labels.classifier import (
    FrozenPrefixBackbone,
    TrainConfig,
    cached_batch,
    cached_prefix,
    load_payload,
    resize_rgb,
    save_model,
    sgd_loop,
)

CHECKPOINT_KIND = "hiseg_foreground_segmenter"
SALIENCY_SOURCES: tuple[str, ...] = ("learned", "spectral_residual", "fine_grained")

VISTAS_FOREGROUND_PREFIXES: tuple[str, ...] = (
    "human--",
    "object--vehicle--",
    "object--traffic-light",
    "object--traffic-sign--",
    "object--support--",
)
# Cityscapes label ids: pole 17, polegroup 18, traffic light 19, traffic sign 20, person 24, rider 25,
# car 26, truck 27, bus 28, caravan 29, trailer 30, train 31, motorcycle 32, bicycle 33.
CITYSCAPES_FOREGROUND_IDS: tuple[int, ...] = (17, 18, 19, 20, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33)


@runtime_checkable
class SaliencySource(Protocol):
    """RGB uint8 image -> class-agnostic saliency in [0, 1] of the same H x W."""

    name: str

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def _unit_range(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float32)
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


@dataclass
class OpenCVSaliency:
    """OpenCV contrib static saliency, min-max normalised per image (no training, no weights)."""

    method: str = "spectral_residual"
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in ("spectral_residual", "fine_grained"):
            raise ValueError(f"saliency.method: expected 'spectral_residual' or 'fine_grained', got {self.method!r}")
        if not hasattr(cv2, "saliency"):
            raise RuntimeError(
                "cv2.saliency is missing: install opencv-contrib-python-headless instead of opencv-python-headless"
            )
        self.name = self.method
        self._detector = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._detector is None:  # created lazily: cv2 objects do not pickle into worker processes
            create = (
                cv2.saliency.StaticSaliencySpectralResidual_create
                if self.method == "spectral_residual"
                else cv2.saliency.StaticSaliencyFineGrained_create
            )
            self._detector = create()
        ok, sal = self._detector.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"OpenCV {self.method} saliency failed on a {image.shape} image")
        sal = np.asarray(sal, np.float32)
        if sal.shape != image.shape[:2]:
            sal = cv2.resize(sal, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return _unit_range(sal)

    def __getstate__(self) -> dict:
        return {"method": self.method, "name": self.name, "_detector": None}


class ForegroundNet(nn.Module):
    """Binary foreground segmenter: backbone + 1x1 conv head, logits upsampled to the input."""

    def __init__(self, config: TrainConfig | None = None) -> None:
        super().__init__()
        config = config or TrainConfig()
        self.config = config
        self.backbone = FrozenPrefixBackbone(
            config.backbone, config.output_stride, config.pretrained, config.freeze_blocks
        )
        self.head = nn.Sequential(
            nn.Conv2d(self.backbone.out_channels, 64, 1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))
        return functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def foreground_mask(sample: Sample, class_names: Sequence[str]) -> np.ndarray:
    """bool H x W foreground of a per-pixel sample (Vistas names or Cityscapes label ids)."""
    if sample.label is None:
        raise ValueError(f"{sample.dataset} {sample.sample_id}: no per-pixel label")
    if sample.dataset == "cityscapes":
        return np.isin(sample.label, CITYSCAPES_FOREGROUND_IDS)
    if sample.dataset == "vistas":
        ids = [i for i, n in enumerate(class_names) if n.startswith(VISTAS_FOREGROUND_PREFIXES)]
        return np.isin(sample.label, ids)
    raise ValueError(f"foreground_mask: no foreground definition for dataset {sample.dataset!r}")


def train_foreground(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], config: TrainConfig) -> ForegroundNet:
    """Train on RGB images with bool foreground masks (binary cross-entropy)."""
    if not images:
        raise ValueError("train_foreground: no training images")
    h, w = config.input_size
    resized = np.stack([resize_rgb(im, config.input_size) for im in images])
    targets = np.stack(
        [cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32) for m in masks]
    )
    model = ForegroundNet(config)
    features = cached_prefix(model.backbone, resized)

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = m.head(m.backbone.suffix(x))
        logits = functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return functional.binary_cross_entropy_with_logits(logits, y)

    sgd_loop(model, lambda rng: cached_batch(features, targets, config.batch_size, rng), loss_fn, config, "foreground")
    model.eval()
    return model


def save_foreground(model: ForegroundNet, path: Path | str) -> None:
    save_model(model, path, CHECKPOINT_KIND, {})


def load_foreground(path: Path | str) -> ForegroundNet:
    payload = load_payload(path, CHECKPOINT_KIND)
    config = TrainConfig.from_dict({**payload["config"], "pretrained": None})
    model = ForegroundNet(config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model


@dataclass
class LearnedSaliency:
    """Saliency = foreground probability of a :class:`ForegroundNet` at the image's size."""

    model: ForegroundNet
    name: str = "learned"

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.model.eval()
        x = torch.from_numpy(normalize_image(resize_rgb(image, self.model.config.input_size)))
        prob = torch.sigmoid(self.model(x))[0].numpy()
        return cv2.resize(prob, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def make_saliency(source: str, checkpoint: Path | str | None = None) -> SaliencySource:
    """Build a source by name (:data:`SALIENCY_SOURCES`); ``learned`` needs its checkpoint."""
    if source == "learned":
        if checkpoint is None:
            raise ValueError("saliency.source 'learned' needs saliency.checkpoint (train one with `train-foreground`)")
        return LearnedSaliency(load_foreground(checkpoint))
    if source in ("spectral_residual", "fine_grained"):
        return OpenCVSaliency(source)
    raise ValueError(f"saliency.source: expected one of {list(SALIENCY_SOURCES)}, got {source!r}")
