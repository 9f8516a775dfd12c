"""ResNet-18/34/50 encoders with torchvision's parameter names, dilatable to output stride 8/16.

Written from the ResNet paper (He et al. 2016, "v1.5" variant: the stride sits on the 3x3 conv of a
bottleneck) so that a local torchvision ImageNet checkpoint loads with ``strict=True``. The names of
the attributes (``conv1``, ``bn1``, ``layer1.0.downsample.0`` ...) are therefore a file-format
contract, not a style choice.

The ImageNet classifier ``fc`` is kept when ``num_classes`` is given (default 1000, as torchvision)
so that the module's ``state_dict`` is exactly torchvision's; ``forward`` never uses it and returns
the last feature map, which is what a segmentation network needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["RESNET_SPECS", "BasicBlock", "Bottleneck", "ResNet", "dilation_schedule"]

_STAGE_PLANES = (64, 128, 256, 512)  # layer1..layer4 (times the block's expansion)
_STAGE_STRIDES = (4, 8, 16, 32)  # stride of layer1..layer4's output without dilation


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution whose padding keeps the size for any dilation (needed for atrous stages)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (ResNet-18/34). Dilation is allowed here, unlike in torchvision,
    because a dilated ResNet-18 is the cheap encoder this project runs on CPUs / Jetsons."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.conv1 = conv3x3(in_ch, planes, stride, first)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided / dilated) -> 1x1 expand x4 + identity (ResNet-50)."""

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # The 3x3 conv is the only spatial one, so the first-block dilation applies to it.
        d = dilation if first_dilation is None else first_dilation
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, d)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block type, blocks per stage)
RESNET_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def dilation_schedule(strides: Sequence[int], input_stride: int, output_stride: int) -> list[tuple[int, int, int]]:
    """DeepLab's rule for trading strides for dilation, shared by ResNet and MobileNetV2.

    For each downsampling step (in order) returns ``(stride, first_dilation, dilation)``: once the
    accumulated stride would exceed ``output_stride`` the step keeps resolution (stride 1); its first
    spatial conv still uses the previous dilation (it sees the same grid as before), and every later
    conv uses the dilation multiplied by the removed stride so the receptive field is unchanged.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    current, dilation, out = input_stride, 1, []
    for s in strides:
        if current * s > output_stride:
            out.append((1, dilation, dilation * s))
            dilation *= s
        else:
            current *= s
            out.append((s, dilation, dilation))
    return out


class ResNet(nn.Module):
    """ResNet encoder. ``forward`` returns the layer4 feature map (``out_channels`` channels) at
    ``1 / output_stride`` of the input resolution."""

    def __init__(self, arch: str = "resnet50", output_stride: int = 32, num_classes: int | None = 1000) -> None:
        super().__init__()
        if arch not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet {arch!r}; choose one of {sorted(RESNET_SPECS)}")
        block, layers = RESNET_SPECS[arch]
        self.arch = arch
        self.output_stride = output_stride
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # Stem has stride 4; layer2..layer4 each halve the resolution unless dilated.
        sched = dilation_schedule((2, 2, 2), input_stride=4, output_stride=output_stride)
        stage_args = [(1, 1, 1), *sched]
        self._in_ch = 64
        for i, (planes, n, (stride, first_dil, dil)) in enumerate(
            zip(_STAGE_PLANES, layers, stage_args, strict=True), start=1
        ):
            setattr(self, f"layer{i}", self._make_layer(block, planes, n, stride, first_dil, dil))
        self.expansion = block.expansion
        self.out_channels = _STAGE_PLANES[-1] * block.expansion
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None
        self._init_weights()

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        n: int,
        stride: int,
        first_dilation: int,
        dilation: int,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_ch != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self._in_ch, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self._in_ch, planes, stride, dilation, first_dilation, downsample)]
        self._in_ch = planes * block.expansion
        blocks += [block(self._in_ch, planes, 1, dilation) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        """He init for convs, identity BN (as in the paper / torchvision), so random init is sane."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def classifier_prefix(self) -> str:
        """State-dict prefix of the (unused) ImageNet classifier."""
        return "fc."

    def skip_channels(self, stride: int) -> int:
        """Channels of the stage output :meth:`forward_with_skip` returns for ``stride``."""
        return self._skip_stage(stride)[1]

    def _skip_stage(self, stride: int) -> tuple[int, int]:
        """``(stage index, channels)`` of the last stage at ``stride``, which must be finer than the
        output stride (a dilated stage has no features of its own at a finer stride)."""
        if stride not in _STAGE_STRIDES or stride >= self.output_stride:
            finer = [s for s in _STAGE_STRIDES if s < self.output_stride]
            raise ValueError(
                f"{self.arch} at output stride {self.output_stride} has skip strides {finer}, not {stride}"
            )
        index = _STAGE_STRIDES.index(stride)
        return index, _STAGE_PLANES[index] * self.expansion

    def forward_with_skip(self, x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output of the last stage at stride, layer4 output)``: the low-level input of a decoder."""
        index = self._skip_stage(stride)[0]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        skip = x
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            if i == index:
                skip = x
        return skip, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
