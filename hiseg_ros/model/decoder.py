"""The optional light decoder: logits at half the output stride, for objects of a few cells.

At output stride 16 a 16-32 px traffic sign is one or two feature cells, whatever the decision
rule does afterwards. ``decoder: deconv_skip`` doubles the resolution of every classifier's logits
(stride 16 -> 8, or 8 -> 4) with two cheap parts:

* a learned stride-2 upsampling of the logits, as the IV 2018 network's transposed convolution:
  a *depthwise* ``ConvTranspose2d`` (4x4, stride 2) per classifier, initialised to bilinear x2
  interpolation. Depthwise because mixing classes is the heads' job already and a full
  ``C x C`` kernel would cost ``C**2`` multiply-adds per output pixel (the root has ~50 classes);
* a low-level skip, as DeepLabv3+: the backbone's features at the target stride (MobileNetV2's
  32-channel stride-8 block, ResNet's ``layer2`` / ``layer1``), reduced once by a 1x1 conv to
  :data:`SKIP_CHANNELS` channels shared by all classifiers, then a 1x1 conv per classifier to its
  logits, added to the upsampled ones (the FCN-8s "skip" in logit space). This is what brings in
  the finer localisation the stride-16 cells lack; the 1x1 conv suffices because the stride-8
  features already have a receptive field several cells wide.

Why in logit space rather than DeepLabv3+'s fusion of features before the classifiers: the
per-classifier adaptation networks would then run at 4x the pixels, i.e. 4x the head cost for
five classifiers; here the extra work per output pixel is ``SKIP_CHANNELS x C`` multiply-adds per
classifier. The skip conv starts at zero, so an untrained decoder computes bilinear x2 of the
stride-16 logits (scaled by a common factor on the outer ring of cells, which leaves the argmax
unchanged): training starts from the same decisions as the network without a decoder.

Training compares bilinear-upsampled logits with the labels whatever their stride, so the loss
needs no change; the in-graph decision (argmax, nearest upsampling) works on the finer grid.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DECODERS", "SKIP_CHANNELS", "SkipUpsample", "bilinear_kernel", "decoder_stride"]

DECODERS: tuple[str, ...] = ("none", "deconv_skip")
SKIP_CHANNELS = 32  # shared low-level reduction; a few channels are enough in logit space


def decoder_stride(decoder: str, output_stride: int) -> int:
    """Stride of the logits: the backbone's output stride, halved by a decoder."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {list(DECODERS)}")
    return output_stride if decoder == "none" else output_stride // 2


def bilinear_kernel(size: int = 4) -> torch.Tensor:
    """``size x size`` weights of bilinear interpolation by ``size // 2`` as a transposed conv
    (``align_corners=False`` in the interior: 0.25 / 0.75 taps for x2)."""
    factor = size // 2
    centre = factor - 0.5
    taps = 1.0 - torch.abs(torch.arange(size, dtype=torch.float32) - centre) / factor
    return taps[:, None] * taps[None, :]


class SkipUpsample(nn.Module):
    """One classifier's part of the decoder: ``upsample(logits) + skip(low-level features)``."""

    def __init__(self, num_classes: int, skip_channels: int = SKIP_CHANNELS) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(
            num_classes, num_classes, 4, stride=2, padding=1, groups=num_classes, bias=False
        )
        self.skip = nn.Conv2d(skip_channels, num_classes, 1, bias=False)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(4).expand_as(self.upsample.weight))
            self.skip.weight.zero_()

    def forward(self, logits: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``logits`` at stride s, ``skip`` at stride s / 2 -> logits at the skip's size (an input that
        is not a multiple of s gives the skip one cell less than twice the logits: cropped, which
        keeps cell i on input pixels [s i / 2, s (i + 1) / 2))."""
        up = self.upsample(logits)[:, :, : skip.shape[2], : skip.shape[3]]
        return up + self.skip(skip)
