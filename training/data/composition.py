"""Fixed per-batch dataset composition (e.g. 1 Cityscapes + 2 Vistas + 1 GTSDB per batch).

Which sample fills which slot is a pure function of (seed, iteration, rank): every dataset is
walked in seeded per-epoch permutations, and the ranks of a distributed run take interleaved,
disjoint positions of the same walk. A resumed run therefore needs only the iteration number
to continue with exactly the data it would have seen, and no worker state is checkpointed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class BatchSlot:
    """One sample of a batch: which dataset (index into the composition) and which sample of it."""

    dataset: int
    index: int


class BatchComposition:
    """Per-batch counts per dataset, drawn from seeded permutations."""

    def __init__(self, sizes: Sequence[int], counts: Sequence[int], seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(sizes) != len(counts) or not sizes:
            raise ValueError(f"need one per-batch count per dataset, got sizes {list(sizes)} counts {list(counts)}")
        for i, (size, count) in enumerate(zip(sizes, counts, strict=True)):
            if count < 0 or (count > 0 and size <= 0):
                raise ValueError(f"dataset {i}: {count} samples per batch from a dataset of {size} samples")
        if sum(counts) <= 0:
            raise ValueError("a batch needs at least one sample")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.sizes = tuple(int(s) for s in sizes)
        self.counts = tuple(int(c) for c in counts)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size

    @property
    def batch_size(self) -> int:
        return sum(self.counts)

    def batch(self, iteration: int) -> list[BatchSlot]:
        """The slots of this rank's batch at ``iteration`` (datasets in composition order)."""
        slots = []
        for d, (size, count) in enumerate(zip(self.sizes, self.counts, strict=True)):
            first = (iteration * self.world_size + self.rank) * count
            for n in range(first, first + count):
                epoch, pos = divmod(n, size)
                slots.append(BatchSlot(d, int(_permutation(self.seed, d, epoch, size)[pos])))
        return slots

    def rng(self, iteration: int, slot: int) -> np.random.Generator:
        """Augmentation randomness of one slot: also a pure function of (seed, iteration, rank, slot)."""
        return np.random.default_rng([self.seed, iteration, self.rank, slot, 0xA5])


@lru_cache(maxsize=64)
def _permutation(seed: int, dataset: int, epoch: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, dataset, epoch, 0x5EED]).permutation(size)
