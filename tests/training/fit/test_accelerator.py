"""What the loop does on CUDA (mixed precision dtype, loss scaling, channels_last), checked on the
CPU: the choices as pure functions, the memory layout on CPU tensors, and that a CPU device gets
none of it (its float32 path is what the exact-resume test compares)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.fit.accelerator import Accelerator, autocast_dtype


@pytest.mark.parametrize(
    ("device", "amp", "bf16", "expected"),
    [
        ("cpu", True, True, None),
        ("cpu", True, False, None),
        ("cuda", False, True, None),
        ("cuda", True, True, torch.bfloat16),
        ("cuda", True, False, torch.float16),
    ],
)
def test_autocast_dtype(device: str, amp: bool, bf16: bool, expected: torch.dtype | None) -> None:
    assert autocast_dtype(device, amp, bf16) is expected


def test_only_float16_scales_the_loss() -> None:
    cuda = torch.device("cuda")
    assert Accelerator(cuda, torch.float16, True, True).scales_loss
    assert not Accelerator(cuda, torch.bfloat16, True, True).scales_loss
    assert not Accelerator(cuda, None, True, True).scales_loss


def test_the_cpu_gets_float32_contiguous_tensors_and_no_scaler() -> None:
    cpu = Accelerator.for_device(torch.device("cpu"), amp=True)
    assert cpu == Accelerator(torch.device("cpu"), None, channels_last=False, pin_memory=False)
    assert not cpu.grad_scaler().is_enabled()
    conv = cpu.prepare_model(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous()
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert cpu.images(images) is images
    with cpu.autocast():
        assert conv(images.float()).dtype == torch.float32


def test_channels_last_layout() -> None:
    layout = Accelerator(torch.device("cpu"), None, channels_last=True, pin_memory=False)
    conv = layout.prepare_model(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    images = layout.images(torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4))
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4))  # same values
