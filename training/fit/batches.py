"""The data of one training iteration: every sample of its batch drawn, augmented and labelled.

Every rank draws its own batch with the fixed per-dataset composition of the config (``per_batch``
counts are *per process*, so the global batch is ``world_size`` times that). Which samples, and
their augmentation, are a pure function of (seed, iteration, rank)
(:class:`training.data.composition.BatchComposition`), so a resumed run needs only the iteration
to see exactly the data it would have seen.

Per sample: draw the geometry (one per tile, :mod:`training.data.crops`); warp the image (+ photometric);
per-pixel datasets get their hard
targets at the original size and each target map is warped (nearest, fill 255); box datasets get
their boxes warped into the crop and pseudo labels made at crop size; tag datasets get their
(spatially uniform) pseudo labels at crop size, or, with ``pseudo_labels.precomputed``, the
precomputed full-image labels warped like the image (nearest, fill void).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hiseg_ros.hierarchy import IGNORE, Hierarchy
from training.data.augment import AugmentConfig, photometric
from training.data.composition import BatchComposition
from training.data.crops import CropConfig, CropSampler
from training.data.readers.base import DatasetReader
from training.fit.config import TrainConfig
from training.labels.collate import TargetBatch, collate_targets
from training.labels.targets import SampleTargets, TargetBuilder


@dataclass(frozen=True)
class Batch:
    iteration: int
    images: torch.Tensor  # uint8 B x 3 x H x W
    targets: TargetBatch
    datasets: tuple[str, ...]

    def pin_memory(self) -> Batch:
        """What the loader calls with ``pin_memory=True`` (on CUDA): images and targets in page-locked
        memory, so their copies to the GPU run asynchronously and the host never waits for them."""
        return replace(self, images=self.images.pin_memory(), targets=self.targets.pin_memory())


def make_sample(
    reader: DatasetReader,
    index: int,
    supervision: str,
    augment: AugmentConfig,
    builder: TargetBuilder,
    rng: np.random.Generator,
    crops: CropSampler | None = None,
) -> tuple[np.ndarray, SampleTargets]:
    """One augmented crop and its targets (see the module docstring for the order of operations);
    ``crops`` (the dataset's :class:`~training.data.crops.CropSampler`) says where it is cut (None: plain)."""
    crop = (crops or CropSampler(CropConfig(), augment)).draw(reader, index, rng)  # mirror classes swapped
    image = photometric(crop.image(), augment, rng)
    if supervision == "pixel":
        full = [builder(tile.sample) for tile in crop.tiles]
        return image, SampleTargets(full[0].kind, crop.warp_maps([f.hard for f in full], IGNORE))
    sample, geometry = crop.tiles[0].sample, crop.tiles[0].geometry  # tags: one tile (config check)
    if supervision == "tags" and sample.dataset in builder.generators:
        # A configured generator (e.g. precomputed label files) labels the full image, so its labels
        # are warped like the image; the uniform default below is made at crop size instead.
        full = builder.distribution(sample)
        warped = replace(full, index=geometry.warp_map(full.index, -1))
        return image, builder.weak_targets(warped, from_tags=True)
    boxes = crop.boxes() if supervision == "boxes" else sample.boxes
    cropped = replace(sample, image=image, label=None, boxes=boxes)
    return image, builder(cropped)


class IterationBatches(Dataset):
    """Map-style dataset over iterations: item ``i`` is the whole batch of iteration ``start + i``."""

    def __init__(
        self,
        readers: Sequence[DatasetReader],
        supervisions: Sequence[str],
        composition: BatchComposition,
        augment: AugmentConfig,
        builder: TargetBuilder,
        start: int,
        stop: int,
        samplers: Sequence[CropSampler] | None = None,
    ) -> None:
        self.readers = list(readers)
        self.samplers = list(samplers) if samplers is not None else [None] * len(self.readers)
        self.supervisions = list(supervisions)
        self.composition = composition
        self.augment = augment
        self.builder = builder
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> Batch:
        iteration = self.start + i
        images, targets, names = [], [], []
        for slot_no, slot in enumerate(self.composition.batch(iteration)):
            reader = self.readers[slot.dataset]
            rng = self.composition.rng(iteration, slot_no)
            image, target = make_sample(
                reader,
                slot.index,
                self.supervisions[slot.dataset],
                self.augment,
                self.builder,
                rng,
                self.samplers[slot.dataset],
            )
            images.append(image)
            targets.append(target)
            names.append(reader.name)
        stacked = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
        return Batch(iteration, stacked, collate_targets(targets), tuple(names))


def training_batches(
    config: TrainConfig,
    hierarchy: Hierarchy,
    readers: Sequence[DatasetReader],
    rank: int,
    world_size: int,
    start: int,
    stop: int,
) -> IterationBatches:
    """The batches of iterations ``start`` .. ``stop - 1`` of process ``rank``, as the config composes them."""
    composition = BatchComposition(
        [len(r) for r in readers],
        [d.per_batch for d in config.datasets],
        seed=config.run.seed,
        rank=rank,
        world_size=world_size,
    )
    supervisions = [hierarchy.dataset(d.name).supervision for d in config.datasets]
    builder = TargetBuilder(hierarchy, config.pseudo_labels, generators=config.pseudo_label_generators(hierarchy))
    samplers = [CropSampler.for_dataset(d.crops, config.augment, hierarchy, d.name) for d in config.datasets]
    return IterationBatches(readers, supervisions, composition, config.augment, builder, start, stop, samplers)


def batch_loader(batches: IterationBatches, num_workers: int, pin_memory: bool) -> DataLoader:
    """Iterations in order, each already a whole batch; ``num_workers`` processes prepare the next ones."""
    return DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )


def _identity(item: Any) -> Any:
    return item
