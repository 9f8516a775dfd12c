"""The hierarchical segmentation network and the per-pixel decisions made from its logits.

One backbone feeds a shared 1x1 reduction; every classifier of the hierarchy (root first, as given
by the hierarchy module) then has its own adaptation network and 1x1 classifier. A flat baseline is
the same network with a single classifier.

Logits stay at feature resolution (``H / logit_stride``: the output stride, or half of it with a
decoder, see :mod:`hiseg_ros.model.decoder`): upsampling to the input is part of the *decision*,
and the cheap way (argmax at low resolution, then nearest upsampling of the labels) agrees with the
expensive way (bilinear upsampling of all logits, then argmax) on almost every pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional

from .backbones import build_backbone
from .decoder import SKIP_CHANNELS, decoder_stride
from .heads import ClassifierHead, SharedReduction

__all__ = ["DecisionMode", "HierarchicalSegNet", "decide", "decide_one"]

DecisionMode = Literal["argmax_nearest", "bilinear_argmax"]
_MAX_UINT8_CLASSES = 256


class HierarchicalSegNet(nn.Module):
    """Backbone -> shared reduction -> per-classifier adaptation + 1x1 logits.

    ``classifiers`` is the ordered ``(name, num_classes)`` list of the hierarchy, root first.
    ``forward`` returns ``{name: B x C x H/s x W/s logits}`` in that order, ``s`` =
    :attr:`logit_stride`. Heads live in ``self.heads[name]`` so training can give them their own
    parameter groups (the paper uses a different weight decay for the sub-classifiers).
    ``decoder="deconv_skip"`` adds the light decoder (logits at half the output stride); the
    default ``"none"`` is the network without one, with the same state dict as before it existed.
    """

    def __init__(
        self,
        classifiers: Sequence[tuple[str, int]],
        backbone: str = "mobilenet_v2",
        output_stride: int = 16,
        shared_channels: int = 256,
        adaptation_depth: int = 1,
        adaptation_dilation: int = 1,
        pretrained: str | Path | None = "default",
        decoder: str = "none",
    ) -> None:
        super().__init__()
        classifiers = [(str(n), int(c)) for n, c in classifiers]
        if not classifiers:
            raise ValueError("at least one classifier is required")
        names = [n for n, _ in classifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"classifier names must be unique, got {names}")
        self.classifier_names: tuple[str, ...] = tuple(names)
        self.num_classes: dict[str, int] = dict(classifiers)
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.decoder = decoder
        self.logit_stride = decoder_stride(decoder, output_stride)
        self.backbone = build_backbone(backbone, output_stride, pretrained)
        self.reduction = SharedReduction(self.backbone.out_channels, shared_channels)
        skip_channels = None
        self.skip_reduction: SharedReduction | None = None
        if decoder != "none":
            low = self.backbone.skip_channels(self.logit_stride)
            self.skip_reduction = SharedReduction(low, SKIP_CHANNELS)
            skip_channels = SKIP_CHANNELS
        self.heads = nn.ModuleDict()
        for name, n_cls in classifiers:
            if not name or "." in name or hasattr(self.heads, name):
                raise ValueError(f"classifier name {name!r} cannot be a module key (empty, '.', or reserved)")
            self.heads[name] = ClassifierHead(
                shared_channels, n_cls, adaptation_depth, adaptation_dilation, skip_channels
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.decoder == "none":
            shared = self.reduction(self.backbone(x))
            return {name: self.heads[name](shared) for name in self.classifier_names}
        assert self.skip_reduction is not None
        low, features = self.backbone.forward_with_skip(x, self.logit_stride)
        shared, skip = self.reduction(features), self.skip_reduction(low)
        return {name: self.heads[name](shared, skip) for name in self.classifier_names}


def decide_one(logits: torch.Tensor, out_size: Sequence[int], mode: DecisionMode = "argmax_nearest") -> torch.Tensor:
    """``B x C x h x w`` logits -> ``B x H x W`` uint8 class indices at ``out_size = (H, W)``.

    Both modes treat a feature pixel as covering an ``os x os`` input cell (``align_corners=False``
    for bilinear, floor for nearest), so they agree except near class boundaries. The scale is
    ``out_size / logits size``: exact when the input is a multiple of the output stride; otherwise
    the map is stretched by under one feature cell, identically in both modes.
    """
    if logits.shape[1] > _MAX_UINT8_CLASSES:
        raise ValueError(f"{logits.shape[1]} classes do not fit a uint8 decision")
    size = (out_size[0], out_size[1])
    if mode == "argmax_nearest":
        labels = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
        return functional.interpolate(labels, size=size, mode="nearest").squeeze(1)
    if mode == "bilinear_argmax":
        up = functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return up.argmax(dim=1).to(torch.uint8)
    raise ValueError(f"unknown decision mode {mode!r}")


def decide(
    logits: dict[str, torch.Tensor], out_size: Sequence[int], mode: DecisionMode = "argmax_nearest"
) -> dict[str, torch.Tensor]:
    """Per-classifier decisions (see :func:`decide_one`), same keys and order as ``logits``."""
    return {name: decide_one(value, out_size, mode) for name, value in logits.items()}
