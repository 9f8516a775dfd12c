"""What the loop does differently on a CUDA device: mixed precision, memory layout, pinned batches.

* Mixed precision (``run.amp``, on by default; ``--no-amp``): autocast to bfloat16 where the GPU
  supports it (float32's exponent range, so no loss scaling), else to float16 with a GradScaler.
  The loss is always computed in float32.
* ``channels_last`` weights and images: the layout cuDNN's convolutions (and tensor cores) are
  fastest with.
* ``cudnn.benchmark`` (fixed crop size: cuDNN picks its fastest algorithms once).
* Pinned host memory for the loader's images and targets (:meth:`training.fit.batches.Batch.pin_memory`), so
  their copies to the GPU overlap compute and the host never waits for them.

On the CPU none of this applies: the loop runs in float32 with contiguous tensors, exactly as
without this module (training on the CPU is bit-reproducible across resumes, which tests check).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn


def autocast_dtype(device_type: str, amp: bool, bf16_supported: bool) -> torch.dtype | None:
    """The dtype autocast runs the forward pass in; ``None``: float32, no autocast."""
    if not amp or device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


@dataclass(frozen=True)
class Accelerator:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype (None: float32)
    channels_last: bool
    pin_memory: bool

    @classmethod
    def for_device(cls, device: torch.device, amp: bool) -> Accelerator:
        cuda = device.type == "cuda"
        bf16 = cuda and torch.cuda.is_bf16_supported()
        return cls(device, autocast_dtype(device.type, amp, bf16), channels_last=cuda, pin_memory=cuda)

    @property
    def scales_loss(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 and float32 ones do not."""
        return self.dtype == torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is a pass-through unless the loss needs scaling."""
        return torch.amp.GradScaler("cuda", enabled=self.scales_loss)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, in the memory layout used for training (in place). On CUDA also
        ``cudnn.benchmark``: every step has the same crop size, so cuDNN's search for the fastest
        convolution algorithms runs once, in the first steps, and pays for itself after that."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of uint8 images on the device, in the training memory layout."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
