"""The one place that defines how an RGB image becomes network input (ImageNet mean / std).

Training, the PyTorch engine and the ONNX / TensorRT engines must agree bit for bit on this, and
the pretrained backbones were trained with exactly these constants, so nobody else should hard-code
them. ``NormalizeInput`` puts the same arithmetic inside the graph so an exported model can be fed
raw uint8 camera images.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "InputLayout",
    "NormalizeInput",
    "normalize_image",
    "normalize_tensor",
]

IMAGENET_MEAN_RGB: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB: tuple[float, float, float] = (0.229, 0.224, 0.225)

InputLayout = Literal["float_nchw", "uint8_nchw", "uint8_nhwc"]


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``H x W x 3`` or ``B x H x W x 3`` -> float32 ``B x 3 x H x W`` network input.

    Channel order must be RGB (a BGR OpenCV image must be converted first: the constants are
    per channel).
    """
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"expected H x W x 3 or B x H x W x 3 RGB, got shape {image.shape}")
    mean = np.asarray(IMAGENET_MEAN_RGB, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(IMAGENET_STD_RGB, np.float32) * 255.0)
    out = (image.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def normalize_tensor(image: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Torch version of :func:`normalize_image` for 0..255 RGB (uint8 or float) ``B x 3 x H x W``
    (or ``B x H x W x 3`` with ``channels_last``); returns float32 NCHW."""
    if channels_last:
        image = image.permute(0, 3, 1, 2)
    # Per channel with Python scalars: a constant tensor made on the host would be copied to the
    # device at every call, and that copy makes the host wait for the device (a training step).
    x = image.float()
    out = torch.empty_like(x)
    for c, (mean, std) in enumerate(zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, strict=True)):
        out[:, c] = (x[:, c] - mean * 255.0) / (std * 255.0)
    return out


class NormalizeInput(nn.Module):
    """In-graph normalisation so an exported model accepts raw uint8 RGB.

    ``layout`` says what the model is fed: ``float_nchw`` (already normalised, pass-through),
    ``uint8_nchw`` or ``uint8_nhwc`` (0..255 RGB, e.g. a ROS ``rgb8`` image reshaped to
    ``1 x H x W x 3`` without any copy).
    """

    def __init__(self, layout: InputLayout = "float_nchw") -> None:
        super().__init__()
        if layout not in ("float_nchw", "uint8_nchw", "uint8_nhwc"):
            raise ValueError(f"unknown input layout {layout!r}")
        self.layout = layout
        mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1) * 255.0
        # Non-persistent: constants of the code, not learnable state, so checkpoints stay clean.
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "float_nchw":
            return x
        if self.layout == "uint8_nhwc":
            x = x.permute(0, 3, 1, 2)
        return (x.float() - self.mean) * self.inv_std
