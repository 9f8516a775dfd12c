"""One training process or ``torchrun --nproc_per_node N`` (also multi-node) without code changes.

Rank and world size come from the torchrun environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); the process group uses gloo on the CPU and nccl on CUDA, and the model is wrapped
in DistributedDataParallel. With one process none of this is touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from training.fit.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder (checkpoints, log, plots); the others only train."""
        return self.rank == 0


def setup_distributed(device_pref: str = "auto") -> DistInfo:
    """Rank / world size from the torchrun environment; init the process group when world size > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistInfo(rank, world_size, local_rank, device)


@contextmanager
def distributed_session(device_pref: str = "auto") -> Iterator[DistInfo]:
    """:func:`setup_distributed`, and the process group destroyed again however training ends."""
    info = setup_distributed(device_pref)
    try:
        yield info
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """The module to train: ``model`` itself, or its DistributedDataParallel wrapper."""
    if not info.distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def reduce_metrics(values: torch.Tensor, counts: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses averaged and pixel counts summed over all processes (one all-reduce)."""
    if not info.distributed:
        return values, counts
    packed = torch.cat([values, counts]).to(info.device)
    dist.all_reduce(packed)
    return packed[: len(values)] / info.world_size, packed[len(values) :]


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Make every replica rank 0's model.

    DDP keeps parameters in sync; buffers (BatchNorm running statistics) are broadcast from rank 0
    before each forward, so after the last one they differ between processes.
    """
    if info.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)
