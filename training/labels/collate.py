"""Collation of per-sample targets into a batch of torch tensors, soft targets still palette encoded.

Per-sample tables are concatenated and their indices offset, so a batch of weak samples costs the
sum of their few distributions, not ``B x C x H x W`` floats.

A collated batch keeps its maps compact (hard targets uint8, soft indices int32): that is what the
loader workers hand over and what is copied to the GPU, an eighth of int64 maps (a batch of 16 at
512x1024 carries ~8 MiB per classifier instead of 64). :meth:`TargetBatch.to` widens them to int64
on the device, where the loss indexes with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hiseg_ros.hierarchy import IGNORE
from training.labels.targets import WEAK, SampleTargets


@dataclass(frozen=True, eq=False)
class SoftBatch:
    """A batch's soft targets of one classifier: per-sample tables concatenated, indices offset."""

    index: torch.Tensor  # int32 B x H x W (int64 after ``TargetBatch.to``), -1 = no target
    table: torch.Tensor  # float32 K x C
    mass: torch.Tensor  # float32 K


@dataclass(frozen=True, eq=False)
class TargetBatch:
    """Collated targets: ``weak[b]`` is True for pseudo-labelled samples, ``from_tags[b]`` for those made from
    image-level tags, ``sure_root[b]`` for those whose root targets are box cores (None: none are);
    hard targets uint8 as collated, int64 after :meth:`to` (255 = ignore)."""

    weak: torch.Tensor  # bool B
    hard: dict[str, torch.Tensor]  # uint8 (collated) or int64 (after ``to``) B x H x W
    soft: dict[str, SoftBatch]
    from_tags: torch.Tensor | None = None  # bool B
    sure_root: torch.Tensor | None = None  # bool B

    @property
    def batch_size(self) -> int:
        return int(self.weak.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        t = next(iter(self.hard.values()))
        return (int(t.shape[-2]), int(t.shape[-1]))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TargetBatch:
        """The batch on ``device`` with int64 maps (what the loss indexes with); the copies are
        asynchronous with ``non_blocking`` from pinned memory (:meth:`pin_memory`), and the
        widening runs on the device, after the compact copy."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        hard = {k: move(t).long() for k, t in self.hard.items()}
        soft = {k: SoftBatch(move(s.index).long(), move(s.table), move(s.mass)) for k, s in self.soft.items()}
        tags = None if self.from_tags is None else move(self.from_tags)
        sure = None if self.sure_root is None else move(self.sure_root)
        return TargetBatch(move(self.weak), hard, soft, tags, sure)

    def pin_memory(self) -> TargetBatch:
        """Every tensor in page-locked memory, so :meth:`to` with ``non_blocking`` does not wait for the GPU."""
        soft = {
            k: SoftBatch(s.index.pin_memory(), s.table.pin_memory(), s.mass.pin_memory()) for k, s in self.soft.items()
        }
        tags = None if self.from_tags is None else self.from_tags.pin_memory()
        sure = None if self.sure_root is None else self.sure_root.pin_memory()
        hard = {k: t.pin_memory() for k, t in self.hard.items()}
        return TargetBatch(self.weak.pin_memory(), hard, soft, tags, sure)

    def flags(self) -> tuple[bool, bool, bool]:
        """(any weak sample, any tag sample, any box-core root target): read on the host, before the
        batch moves, so the loss need not wait for the device to branch on them."""
        tags = self.from_tags is not None and bool(self.from_tags.any())
        sure = self.sure_root is not None and bool(self.sure_root.any())
        return bool(self.weak.any()), tags, sure


def collate_targets(items: Sequence[SampleTargets]) -> TargetBatch:
    """Stack samples of one size into torch tensors; classifiers a sample lacks are IGNORE / no target."""
    if not items:
        raise ValueError("collate_targets: empty batch")
    shapes = [t.shape for t in items]
    if len(set(shapes)) != 1:
        raise ValueError(f"collate_targets: samples of one batch must share H x W, got {shapes}")
    shape = shapes[0]
    names = list(dict.fromkeys(n for t in items for n in (*t.hard, *t.soft)))
    hard = {}
    for name in names:
        stack = np.stack([t.hard.get(name, np.full(shape, IGNORE, np.uint8)) for t in items])
        hard[name] = torch.from_numpy(stack)
    soft = {}
    for name in names:
        present = [t.soft[name] for t in items if name in t.soft]
        if not present:
            continue
        widths = {s.table.shape[1] for s in present}
        if len(widths) != 1:
            raise ValueError(f"collate_targets: soft targets of {name!r} have different class counts {sorted(widths)}")
        indices, tables, masses, offset = [], [], [], 0
        for t in items:
            s = t.soft.get(name)
            if s is None:
                indices.append(np.full(shape, -1, np.int32))
                continue
            indices.append(np.where(s.index >= 0, s.index.astype(np.int32) + offset, -1).astype(np.int32))
            tables.append(s.table)
            masses.append(s.mass)
            offset += s.table.shape[0]
        soft[name] = SoftBatch(
            torch.from_numpy(np.stack(indices)),
            torch.from_numpy(np.concatenate(tables).astype(np.float32)),
            torch.from_numpy(np.concatenate(masses).astype(np.float32)),
        )
    weak = torch.tensor([t.kind == WEAK for t in items], dtype=torch.bool)
    tags = torch.tensor([t.from_tags for t in items], dtype=torch.bool)
    return TargetBatch(weak, hard, soft, tags, torch.tensor([t.sure_root for t in items], dtype=torch.bool))
