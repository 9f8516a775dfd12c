"""Collation of per-sample targets into a batch of torch tensors, soft targets still palette encoded.

Per-sample tables are concatenated and their indices offset, so a batch of weak samples costs the
sum of their few distributions, not ``B x C x H x W`` floats.
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

    index: torch.Tensor  # int64 B x H x W, -1 = no target
    table: torch.Tensor  # float32 K x C
    mass: torch.Tensor  # float32 K


@dataclass(frozen=True, eq=False)
class TargetBatch:
    """Collated targets: ``weak[b]`` is True for pseudo-labelled samples, ``from_tags[b]`` for those made from
    image-level tags, ``sure_root[b]`` for those whose root targets are box cores (None: none are);
    hard targets int64 (255 = ignore)."""

    weak: torch.Tensor  # bool B
    hard: dict[str, torch.Tensor]  # int64 B x H x W
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

    def to(self, device: torch.device | str) -> TargetBatch:
        soft = {k: SoftBatch(s.index.to(device), s.table.to(device), s.mass.to(device)) for k, s in self.soft.items()}
        tags = None if self.from_tags is None else self.from_tags.to(device)
        sure = None if self.sure_root is None else self.sure_root.to(device)
        return TargetBatch(self.weak.to(device), {k: t.to(device) for k, t in self.hard.items()}, soft, tags, sure)


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
        hard[name] = torch.from_numpy(stack.astype(np.int64))
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
                indices.append(np.full(shape, -1, np.int64))
                continue
            indices.append(np.where(s.index >= 0, s.index.astype(np.int64) + offset, -1))
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
