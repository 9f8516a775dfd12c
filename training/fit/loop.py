"""The training loop, read top-down in :func:`fit`: check everything, build (or restore) the model,
its optimiser and the data, then per iteration one step, its metrics, a log row and, every
``checkpoint.every`` iterations and at the end, a checkpoint.

The parts live next to it: :mod:`training.fit.batches` (the data of an iteration),
:mod:`training.fit.checkpoints` (resume and the run folder's checkpoints),
:mod:`training.fit.distributed` (torchrun / DDP), :mod:`training.fit.optim` (SGD and the
schedule), :mod:`training.fit.loss` and :mod:`training.fit.log`.

On CUDA the loop uses mixed precision, ``channels_last`` and pinned batches
(:mod:`training.fit.accelerator`); on the CPU it runs in float32. Losses stay on the device until
a log or checkpoint step, which fetches (and, with DDP, all-reduces) all of them since the previous
one at once: no host synchronisation of the loop's own in between.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import HierarchicalSegNet, normalize_tensor
from training.fit.accelerator import Accelerator
from training.fit.batches import Batch, batch_loader, training_batches
from training.fit.checkpoints import (
    clean_temporaries,
    load_init,
    load_resume,
    restore_training_state,
    training_state,
    write_checkpoint,
)
from training.fit.config import TrainConfig, check_datasets
from training.fit.distributed import DistInfo, broadcast_buffers, reduce_metrics, wrap
from training.fit.log import TrainingLog
from training.fit.loss import HierarchicalLoss, LossOutput
from training.fit.optim import build_optimizer, build_scheduler
from training.fit.trunk_gradient import attach_trunk_gradient, trunk_gradient_factors


@dataclass
class TrainResult:
    iteration: int  # completed iterations
    losses: list[dict[str, float]]  # per executed iteration (global mean over ranks)
    out_dir: Path
    checkpoint: Path | None  # the last checkpoint this call wrote (rank 0 only)
    model: HierarchicalSegNet  # the trained network; every rank holds rank 0's weights and buffers


def fit(
    config: TrainConfig,
    hierarchy: Hierarchy,
    info: DistInfo,
    resume: str | bool | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or continue) training in this process; everything that can be checked is checked before the first step."""
    # ---- everything that can fail on bad input, before any training
    readers = check_datasets(config, hierarchy)
    resumed = load_resume(resume, config, hierarchy, info.world_size)
    init = load_init(config, hierarchy) if resumed is None else None
    start = int(resumed.training["iteration"]) if resumed is not None else 0
    stop = config.schedule.iterations if stop_after is None else min(config.schedule.iterations, stop_after)

    # ---- model, optimiser, schedule, precision: new, or restored from the checkpoint
    seed_everything(config.run.seed)
    weights = resumed or init
    model = config.model.build(hierarchy, pretrained=config.model.pretrained if weights is None else None)
    if weights is not None:
        model.load_state_dict(weights.net.state_dict())
    if config.model.sync_batchnorm and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    accelerator = Accelerator.for_device(info.device, config.run.amp)
    accelerator.prepare_model(model)
    optimizer = build_optimizer(model, config, hierarchy)
    scheduler = build_scheduler(optimizer, config)
    scaler = accelerator.grad_scaler()
    if resumed is not None:
        restore_training_state(resumed.training, optimizer, scheduler, scaler)
    criterion = HierarchicalLoss(
        hierarchy, config.loss.weights, config.pseudo_labels.min_mass, config.loss.class_weights
    )
    attach_trunk_gradient(model, trunk_gradient_factors(hierarchy, criterion.weights, config.loss.trunk_weights))
    step = Step(
        wrap(model, info), criterion, optimizer, scheduler, scaler, accelerator, config.optimizer.clip_grad_norm
    )

    # ---- data: the batches of iterations start .. stop - 1 of this rank
    batches = training_batches(config, hierarchy, readers, info.rank, info.world_size, start, stop)
    loader = batch_loader(batches, config.run.num_workers, pin_memory=accelerator.pin_memory)
    global_batch = batches.composition.batch_size * info.world_size

    # ---- the loop
    out_dir = Path(config.run.out_dir)
    names = list(hierarchy.classifier_names)
    report = None
    if info.is_main:
        start_run_folder(out_dir, config, hierarchy)
        log_every = config.run.log_every
        report = TrainingLog(out_dir, names, start, stop, log_every, resumed=resumed is not None, progress=progress)
    history: list[dict[str, float]] = []
    pending: list[StepRecord] = []  # iterations whose losses are still on the device
    checkpoint: Path | None = None
    iteration = start
    step.net.train()
    t_last = time.perf_counter()
    with report or nullcontext():
        for batch in loader:
            assert batch.iteration == iteration, (batch.iteration, iteration)
            out, lr = step(batch)
            iteration += 1
            now = time.perf_counter()
            pending.append(StepRecord(iteration, loss_vector(out, names), pixel_counts(out, names), lr, now - t_last))
            t_last = now
            save = iteration % config.checkpoint.every == 0 or iteration == stop
            if not save and iteration % config.run.log_every != 0:
                continue
            for record, metrics, pixels in fetch_metrics(pending, names, info):
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(f"iteration {record.iteration}: non-finite loss {metrics}")
                history.append(metrics)
                if report is not None:
                    report.iteration(record.iteration, metrics, pixels, record.lr, global_batch, record.seconds)
            pending.clear()
            if save and report is not None:  # rank 0 writes the checkpoints
                state = training_state(iteration, info.world_size, optimizer, scheduler, scaler, config, history[-1])
                checkpoint = write_checkpoint(out_dir, model, hierarchy, config, state)
                report.checkpoint_written()
    broadcast_buffers(model, info)
    return TrainResult(iteration, history, out_dir, checkpoint, model)


@dataclass
class Step:
    """One optimisation step on a batch: forward (autocast on CUDA), loss in float32, backward,
    optional clipping of the global gradient norm (of the unscaled gradients), update."""

    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    criterion: HierarchicalLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    accelerator: Accelerator
    clip_grad_norm: float | None = None

    def __call__(self, batch: Batch) -> tuple[LossOutput, float]:
        """The losses of ``batch`` (still on the device) and the learning rate the update used."""
        images = normalize_tensor(self.accelerator.images(batch.images))
        with self.accelerator.autocast():
            logits = self.net(images)
        # The loss in float32; it keeps every head in the graph (DDP needs a gradient for every
        # parameter, also of a classifier without a labelled pixel in this batch). It gets the
        # targets on the host: it reads their flags there and copies them (pinned: asynchronously).
        out = self.criterion({k: v.float() for k, v in logits.items()}, batch.targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.total).backward()
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return out, lr


@dataclass(frozen=True)
class StepRecord:
    """One iteration, as the loop keeps it until the next log or checkpoint step."""

    iteration: int  # counted from 1
    losses: torch.Tensor  # on the device: the total, then one per classifier (:func:`loss_vector`)
    pixels: torch.Tensor  # float, per classifier the labelled pixels in this rank's batch (on the device)
    lr: float
    seconds: float


def loss_vector(out: LossOutput, names: Sequence[str]) -> torch.Tensor:
    return torch.stack([out.total.detach().float(), *[out.per_classifier[n].float() for n in names]])


def pixel_counts(out: LossOutput, names: Sequence[str]) -> torch.Tensor:
    """The loss's counts (ints, or device tensors in its dense form) as one vector on the loss's device."""
    device = out.total.device
    counts = [out.pixels[n][0] + out.pixels[n][1] for n in names]
    # an int (nothing counted) becomes a filled scalar: a copy from the host would wait for the device
    return torch.stack(
        [c.float() if isinstance(c, torch.Tensor) else torch.full((), float(c), device=device) for c in counts]
    )


def fetch_metrics(
    records: Sequence[StepRecord], names: Sequence[str], info: DistInfo
) -> list[tuple[StepRecord, dict[str, float], list[int]]]:
    """Per record: ``loss`` and ``loss/<classifier>`` averaged over the ranks, and the labelled
    pixels per classifier summed over them; one all-reduce and one copy to the host for all."""
    values = torch.stack([r.losses for r in records])
    counts = torch.stack([r.pixels for r in records])
    values, counts = reduce_metrics(values.flatten(), counts.flatten(), info)
    rows = values.view(len(records), -1).cpu().tolist()
    pixels = counts.view(len(records), -1).cpu().tolist()
    out = []
    for record, losses, counted in zip(records, rows, pixels, strict=True):
        metrics = {"loss": losses[0], **{f"loss/{n}": v for n, v in zip(names, losses[1:], strict=True)}}
        out.append((record, metrics, [int(c) for c in counted]))
    return out


def seed_everything(seed: int) -> None:
    """torch, numpy and Python generators (weight initialisation; a resume restores their states)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def start_run_folder(out_dir: Path, config: TrainConfig, hierarchy: Hierarchy) -> None:
    """The run folder with what made it (``config.yaml``, ``hierarchy.json``), without a killed writer's leftovers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out_dir)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    (out_dir / "hierarchy.json").write_text(hierarchy.to_json(), encoding="utf-8")
