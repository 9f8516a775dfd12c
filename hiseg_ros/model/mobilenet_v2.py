"""MobileNetV2 encoder with torchvision's parameter names, dilatable to output stride 8/16.

Written from the MobileNetV2 paper (Sandler et al. 2018, width multiplier 1.0). The nesting of
``nn.Sequential`` containers mirrors torchvision's checkpoint layout (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ``features.2.conv.1.0.weight``, ``features.18.0.weight``,
``classifier.1.weight``) because that layout is what the offline ImageNet weights use.

``classifier`` (dropout + linear) is kept when ``num_classes`` is given so the state dict is exactly
torchvision's; ``forward`` returns the last feature map (1280 channels) and never uses it.
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet import dilation_schedule

__all__ = ["MOBILENET_V2_SETTINGS", "InvertedResidual", "MobileNetV2"]

# (expansion t, output channels c, repeats n, first stride s), table 2 of the paper.
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1
) -> nn.Sequential:
    """conv -> BN -> ReLU6 as one Sequential (index 0/1 are the checkpoint's conv/bn keys)."""
    padding = (kernel - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        # The residual depends on the *paper* stride, not the dilated one, so the parameter layout
        # and the function of a block do not change with the output stride.
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_ch, hidden, kernel=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 encoder. ``forward`` returns ``features`` output (``out_channels`` = 1280) at
    ``1 / output_stride`` of the input resolution."""

    def __init__(self, output_stride: int = 32, num_classes: int | None = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.output_stride = output_stride
        # Only the blocks that start a stage with stride 2 can be dilated; the stem has stride 2.
        stage_strides = [s for _, _, _, s in MOBILENET_V2_SETTINGS if s == 2]
        sched = iter(dilation_schedule(stage_strides, input_stride=2, output_stride=output_stride))
        features: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
        in_ch, dilation, paper_stride = 32, 1, 2
        # paper stride -> (index of the last block at that stride, its channels): the skip points.
        self._stride_ends: dict[int, tuple[int, int]] = {2: (0, 32)}
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for i in range(n):
                stride, block_dil = 1, dilation
                if i == 0 and s == 2:
                    stride, block_dil, dilation = next(sched)
                    paper_stride *= 2
                features.append(InvertedResidual(in_ch, c, stride, t, block_dil))
                in_ch = c
                self._stride_ends[paper_stride] = (len(features) - 1, c)
        self.out_channels = 1280
        features.append(conv_bn_relu6(in_ch, self.out_channels, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(self.out_channels, num_classes)) if num_classes else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """Same scheme as the reference implementation, so random init trains comparably."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def classifier_prefix(self) -> str:
        """State-dict prefix of the (unused) ImageNet classifier."""
        return "classifier."

    def skip_channels(self, stride: int) -> int:
        """Channels of the block output :meth:`forward_with_skip` returns for ``stride``."""
        return self._skip_end(stride)[1]

    def _skip_end(self, stride: int) -> tuple[int, int]:
        """``(index in features, channels)`` of the last block at ``stride``, which must be finer
        than the output stride (a dilated block has no features of its own at a finer stride)."""
        if stride not in self._stride_ends or stride >= self.output_stride:
            finer = [s for s in self._stride_ends if s < self.output_stride]
            raise ValueError(
                f"mobilenet_v2 at output stride {self.output_stride} has skip strides {finer}, not {stride}"
            )
        return self._stride_ends[stride]

    def forward_with_skip(self, x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output of the last block at stride, features output)``: the low-level input of a decoder."""
        end = self._skip_end(stride)[0]
        skip = self.features[: end + 1](x)
        return skip, self.features[end + 1 :](skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
