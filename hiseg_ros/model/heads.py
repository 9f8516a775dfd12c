"""Heads of the hierarchical network: shared reduction, per-classifier adaptation, 1x1 logits.

Following Meletis & Dubbelman (IV 2018): the backbone output is reduced once by a 1x1 conv to a
*shared representation* (256 channels in the paper), then every classifier gets its own shallow
"adaptation network" of residual bottleneck blocks so that sub-classifiers can specialise features
without disturbing the root, and finally a 1x1 conv gives the logits (upsampled x2 by the optional
decoder, :mod:`hiseg_ros.model.decoder`).
"""

from __future__ import annotations

import torch
from torch import nn

from .decoder import SkipUpsample

__all__ = ["AdaptationBlock", "ClassifierHead", "SharedReduction"]


class SharedReduction(nn.Sequential):
    """1x1 conv -> BN -> ReLU from backbone channels to the shared representation."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class AdaptationBlock(nn.Module):
    """Residual bottleneck (1x1 reduce /4 -> 3x3 dilated -> 1x1 expand) keeping channels and size.

    Dilation widens the classifier's context at no resolution cost (the paper's adaptation networks
    run at output stride 8).
    """

    def __init__(self, channels: int, dilation: int = 1, reduction: int = 4) -> None:
        super().__init__()
        mid = max(channels // reduction, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)
        for m in self.body.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class ClassifierHead(nn.Module):
    """``depth`` adaptation blocks (0 = none) followed by a 1x1 conv to ``num_classes`` logits, and
    with ``skip_channels`` this classifier's part of the decoder (:class:`SkipUpsample`): it lives
    in the head so that training's per-head parameter groups cover it."""

    def __init__(
        self, channels: int, num_classes: int, depth: int = 1, dilation: int = 1, skip_channels: int | None = None
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if depth < 0:
            raise ValueError(f"adaptation depth must be >= 0, got {depth}")
        self.adaptation = nn.Sequential(*(AdaptationBlock(channels, dilation) for _ in range(depth)))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        self.decoder = SkipUpsample(num_classes, skip_channels) if skip_channels is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(self.adaptation(x))
        if self.decoder is None:
            return logits
        if skip is None:
            raise ValueError("this head has a decoder: it needs the low-level skip features")
        return self.decoder(logits, skip)
