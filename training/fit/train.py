"""Train the hierarchical segmentation network: ``python -m training.fit.train --config CFG [--resume] [--out DIR]``.

One process, or ``torchrun --nproc_per_node N`` (also multi-node through torchrun's rendezvous)
without code changes: rank and world size come from the torchrun environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``), the backend is gloo on CPU and nccl on CUDA, and the model is
wrapped in DistributedDataParallel. Mixed precision (autocast + GradScaler) is used on CUDA only.

Data: every rank draws its own batch with the fixed per-dataset composition of the config
(``per_batch`` counts are *per process*, so the global batch is ``world_size`` times that). Which
samples, and their augmentation, are a pure function of (seed, iteration, rank)
(:class:`training.data.composition.BatchComposition`), so ``--resume`` needs only the iteration:
a resumed run sees exactly the data it would have seen and continues the same loss curve.

Per sample: draw the geometry; warp the image (+ photometric); per-pixel datasets get their hard
targets at the original size and each target map is warped (nearest, fill 255); box datasets get
their boxes warped into the crop and pseudo labels made at crop size; tag datasets get their
(spatially uniform) pseudo labels at crop size, or, with ``pseudo_labels.precomputed``, the
precomputed full-image labels warped like the image (nearest, fill void).

Checkpoints (rank 0, every ``checkpoint.every`` iterations and at the end) are written to a
temporary file, fsync'ed and renamed over the final name, so a process killed at any moment leaves
only complete files; ``last.pt`` is a hard link to the newest, older ones beyond ``keep`` are
removed. Keys: ``model``, ``hierarchy`` (JSON), ``model_config`` (what rebuilds the network),
``optimizer``, ``scheduler``, ``scaler``, ``iteration`` (completed iterations), ``config``, ``rng``,
``metrics``, ``world_size``, ``format``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hiseg_ros.atomic import atomic_output
from hiseg_ros.hierarchy import IGNORE, Hierarchy
from hiseg_ros.model import HierarchicalSegNet, normalize_tensor
from training.data.augment import AugmentConfig, photometric, random_geometry
from training.data.composition import BatchComposition
from training.data.readers.base import DatasetReader
from training.fit.config import ConfigError, TrainConfig, check_datasets, load_config
from training.fit.log import CsvLog, plot_curves
from training.fit.loss import HierarchicalLoss
from training.labels.collate import TargetBatch, collate_targets
from training.labels.node_distribution import NodeDistribution
from training.labels.targets import SampleTargets, TargetBuilder

log = logging.getLogger("training.fit.train")

CHECKPOINT_FORMAT = 1
CHECKPOINT_PREFIX = "ckpt_"
LAST = "last.pt"


class CheckpointMismatchError(ConfigError):
    """A checkpoint given to --resume or checkpoint.init does not fit the configured hierarchy / model."""


# --------------------------------------------------------------------------- distributed setup
@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
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


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Batch:
    iteration: int
    images: torch.Tensor  # uint8 B x 3 x H x W
    targets: TargetBatch
    datasets: tuple[str, ...]


def make_sample(
    reader: DatasetReader,
    index: int,
    supervision: str,
    augment: AugmentConfig,
    builder: TargetBuilder,
    rng: np.random.Generator,
) -> tuple[np.ndarray, SampleTargets]:
    """One augmented crop and its targets (see the module docstring for the order of operations)."""
    sample = reader[index]
    geometry = random_geometry(sample.image.shape[:2], augment, rng)
    image = photometric(geometry.warp_image(sample.image), augment, rng)
    if supervision == "pixel":
        full = builder(sample)
        hard = {name: geometry.warp_map(t, IGNORE) for name, t in full.hard.items()}
        return image, SampleTargets(full.kind, hard)
    if supervision == "tags" and sample.dataset in builder.generators:
        # A configured generator (e.g. precomputed label files) labels the full image, so its labels
        # are warped like the image; the uniform default below is made at crop size instead.
        full = builder.distribution(sample)
        warped = NodeDistribution(full.nodes, geometry.warp_map(full.index, -1), full.table, full.hard)
        return image, builder.weak_targets(warped)
    boxes = geometry.warp_boxes(sample.boxes) if supervision == "boxes" else sample.boxes
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
    ) -> None:
        self.readers = list(readers)
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
                reader, slot.index, self.supervisions[slot.dataset], self.augment, self.builder, rng
            )
            images.append(image)
            targets.append(target)
            names.append(reader.name)
        stacked = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
        return Batch(iteration, stacked, collate_targets(targets), tuple(names))


def _identity(item: Any) -> Any:
    return item


# --------------------------------------------------------------------------- model and optimiser
def build_model(config: TrainConfig, hierarchy: Hierarchy, pretrained: bool = True) -> HierarchicalSegNet:
    m = config.model
    return m.build(hierarchy, pretrained=m.pretrained if pretrained else None)


def build_optimizer(model: HierarchicalSegNet, config: TrainConfig, hierarchy: Hierarchy) -> torch.optim.SGD:
    """SGD with two parameter groups: sub-classifier heads get ``sub_weight_decay``, the rest ``weight_decay``."""
    o = config.optimizer
    root = hierarchy.classifiers[0].name
    sub, main = [], []
    for name, param in model.named_parameters():
        parts = name.split(".")
        (sub if parts[0] == "heads" and parts[1] != root else main).append(param)
    groups = [{"params": main, "weight_decay": o.weight_decay, "name": "main"}]
    if sub:
        groups.append({"params": sub, "weight_decay": o.sub_weight_decay, "name": "sub_classifiers"})
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def lr_factor(iteration: int, config: TrainConfig) -> float:
    """Linear warm-up, then poly decay ``(1 - it / iterations) ** power``."""
    s = config.schedule
    if iteration < s.warmup_iterations:
        return (iteration + 1) / s.warmup_iterations
    return max(0.0, 1.0 - iteration / s.iterations) ** s.poly_power


# --------------------------------------------------------------------------- checkpoints
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename over ``path``."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    _fsync_dir(path.parent)


def _link_last(target: Path, checkpoint: dict) -> None:
    last = target.with_name(LAST)
    tmp = target.with_name(f".{LAST}.tmp{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(target, tmp)
        os.replace(tmp, last)
        _fsync_dir(last.parent)
    except OSError:
        atomic_save(checkpoint, last)  # file systems without hard links


def checkpoint_paths(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob(f"{CHECKPOINT_PREFIX}*.pt"))


def write_checkpoint(out_dir: Path, checkpoint: dict, keep: int) -> Path:
    path = out_dir / f"{CHECKPOINT_PREFIX}{checkpoint['iteration']:08d}.pt"
    atomic_save(checkpoint, path)
    _link_last(path, checkpoint)
    for old in checkpoint_paths(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def clean_temporaries(out_dir: Path) -> None:
    """Remove partial files a killed writer left behind (never a complete checkpoint)."""
    for tmp in out_dir.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path | str) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointMismatchError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        raise CheckpointMismatchError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or not {"model", "hierarchy", "model_config"} <= set(checkpoint):
        raise CheckpointMismatchError(
            f"{path}: not a hiseg_ros training checkpoint (needs model, hierarchy, model_config)"
        )
    return checkpoint


def check_compatible(checkpoint: dict, path: Path | str, hierarchy: Hierarchy, config: TrainConfig) -> None:
    """The checkpoint must have been trained with the same hierarchy and network layout."""
    try:
        theirs = Hierarchy.from_json(checkpoint["hierarchy"], source=str(path))
    except ValueError as exc:
        raise CheckpointMismatchError(f"{path}: its hierarchy JSON is invalid: {exc}") from exc
    if theirs != hierarchy:
        ours_c, theirs_c = hierarchy.classifier_sizes, theirs.classifier_sizes
        detail = (
            f"classifiers {theirs_c} vs {ours_c}" if ours_c != theirs_c else "classes, ids or dataset mappings differ"
        )
        raise CheckpointMismatchError(
            f"{path}: checkpoint was trained with hierarchy {theirs.name!r}, the config uses {hierarchy.name!r} "
            f"from {config.hierarchy} ({detail})"
        )
    ours = config.model.checkpoint_config()
    diff = {
        k: (checkpoint["model_config"].get(k), v) for k, v in ours.items() if checkpoint["model_config"].get(k) != v
    }
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointMismatchError(f"{path}: model config differs from {config.source} ({shown})")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_dict_sha256(model: nn.Module) -> str:
    """Checksum of a state dict (names, dtypes, shapes, bytes), to compare DDP replicas."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    iteration: int
    losses: list[dict[str, float]]  # per executed iteration (global mean over ranks)
    out_dir: Path
    checkpoint: Path | None


def _resolve_resume(resume: str | bool | None, out_dir: Path) -> Path | None:
    if not resume:
        return None
    path = out_dir / LAST if resume is True else Path(resume)
    if not path.is_file():
        raise CheckpointMismatchError(f"--resume: no checkpoint at {path}")
    return path


def train(
    config: TrainConfig,
    hierarchy: Hierarchy,
    resume: str | bool | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run (or continue) training; everything that can be checked is checked before the first step."""
    info = setup_distributed(config.run.device)
    try:
        return _train(config, hierarchy, info, resume, stop_after, progress)
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    hierarchy: Hierarchy,
    info: DistInfo,
    resume: str | bool | None,
    stop_after: int | None,
    progress: bool,
) -> TrainResult:
    out_dir = Path(config.run.out_dir)
    total = config.schedule.iterations
    # ---- everything that can fail on bad input, before any training
    readers = check_datasets(config, hierarchy)
    resume_path = _resolve_resume(resume, out_dir)
    checkpoint = None
    if resume_path is not None:
        checkpoint = load_checkpoint(resume_path)
        check_compatible(checkpoint, resume_path, hierarchy, config)
    init = None
    if config.checkpoint.init is not None and checkpoint is None:
        init = load_checkpoint(config.checkpoint.init)
        check_compatible(init, config.checkpoint.init, hierarchy, config)
    start = int(checkpoint["iteration"]) if checkpoint is not None else 0
    if checkpoint is not None and int(checkpoint.get("world_size", info.world_size)) != info.world_size:
        log.warning(
            "resuming a run of world size %s with %s processes: the data order changes from here on",
            checkpoint.get("world_size"),
            info.world_size,
        )
    stop = total if stop_after is None else min(total, stop_after)

    torch.manual_seed(config.run.seed)
    np.random.seed(config.run.seed % 2**32)
    random.seed(config.run.seed)
    model = build_model(config, hierarchy, pretrained=checkpoint is None and init is None)
    if init is not None:
        model.load_state_dict(init["model"])
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    if config.model.sync_batchnorm and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(info.device)
    optimizer = build_optimizer(model, config, hierarchy)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, config))
    use_amp = config.run.amp and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        if checkpoint.get("rng"):
            set_rng_state(checkpoint["rng"])
    net: nn.Module = model
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    criterion = HierarchicalLoss(hierarchy, config.loss.weights, config.pseudo_labels.min_mass)

    composition = BatchComposition(
        [len(r) for r in readers],
        [d.per_batch for d in config.datasets],
        seed=config.run.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    supervisions = [hierarchy.dataset(d.name).supervision for d in config.datasets]
    builder = TargetBuilder(
        hierarchy, config.pseudo_label_config(), generators=config.pseudo_label_generators(hierarchy)
    )
    batches = IterationBatches(readers, supervisions, composition, config.augment_config(), builder, start, stop)
    workers = config.run.num_workers
    loader = DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )

    names = list(hierarchy.classifier_names)
    csv_log = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_temporaries(out_dir)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
        (out_dir / "hierarchy.json").write_text(hierarchy.to_json(), encoding="utf-8")
        columns = ["loss", *[f"loss/{n}" for n in names], *[f"pixels/{n}" for n in names]]
        columns += ["lr", "images_per_s", "seconds"]
        csv_log = CsvLog(out_dir / "train_log.csv", columns, resume_after=start if checkpoint is not None else None)

    bar = None
    if info.is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=stop, initial=start, desc="train", unit="it", dynamic_ncols=True, file=sys.stderr)

    global_batch = composition.batch_size * info.world_size
    history: list[dict[str, float]] = []
    last_path: Path | None = None
    iteration = start
    net.train()
    t_last = time.perf_counter()

    def save(metrics: dict[str, float]) -> Path | None:
        if not info.is_main:
            return None
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "hierarchy": hierarchy.to_json(),
            "model_config": config.model.checkpoint_config(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None,
            "iteration": iteration,
            "config": config.to_dict(),
            "rng": rng_state(),
            "metrics": metrics,
            "world_size": info.world_size,
        }
        path = write_checkpoint(out_dir, ckpt, config.checkpoint.keep)
        if csv_log is not None:
            csv_log.flush()
            plot_curves(csv_log.path, out_dir / "plots")
        return path

    metrics: dict[str, float] = {}
    try:
        for batch in loader:
            assert batch.iteration == iteration, (batch.iteration, iteration)
            images = normalize_tensor(batch.images.to(info.device, non_blocking=True))
            targets = batch.targets.to(info.device)
            autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
            with autocast:
                logits = net(images)
            # Loss in float32; the zero term keeps every head in the graph (DDP needs all params used
            # even when a classifier has no labelled pixel in this batch).
            logits = {k: v.float() for k, v in logits.items()}
            out = criterion(logits, targets)
            loss = out.total + 0.0 * sum(v.mean() for v in logits.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            iteration += 1

            values = torch.stack([out.total.detach().float(), *[out.per_classifier[n].float() for n in names]])
            counts = torch.tensor([float(out.pixels[n][0] + out.pixels[n][1]) for n in names], device=values.device)
            if info.distributed:
                packed = torch.cat([values, counts]).to(info.device)
                dist.all_reduce(packed)
                values, counts = packed[: len(values)] / info.world_size, packed[len(values) :]
            values_l = values.cpu().tolist()
            now = time.perf_counter()
            dt = now - t_last
            t_last = now
            metrics = {"loss": values_l[0], **{f"loss/{n}": v for n, v in zip(names, values_l[1:], strict=True)}}
            if not all(math.isfinite(v) for v in values_l):
                raise FloatingPointError(f"iteration {iteration}: non-finite loss {metrics}")
            history.append(metrics)
            row = {
                "iteration": iteration,
                **metrics,
                **{f"pixels/{n}": int(c) for n, c in zip(names, counts.cpu().tolist(), strict=True)},
                "lr": lr,
                "images_per_s": global_batch / dt if dt > 0 else 0.0,
                "seconds": dt,
            }
            if csv_log is not None and (iteration % config.run.log_every == 0 or iteration == stop):
                csv_log.write(row)
            if bar is not None:
                short = {n[:10]: f"{v:.3f}" for n, v in zip(names, values_l[1:], strict=True)}
                bar.set_postfix(loss=f"{values_l[0]:.3f}", **short, img_s=f"{row['images_per_s']:.1f}", refresh=False)
                bar.update(1)
            if iteration % config.checkpoint.every == 0 or iteration == stop:
                last_path = save(metrics) or last_path
    finally:
        if bar is not None:
            bar.close()
        if csv_log is not None:
            csv_log.close()
    if info.is_main and csv_log is not None:
        plot_curves(csv_log.path, out_dir / "plots")
    if info.distributed:
        # DDP keeps parameters in sync; buffers (BatchNorm running statistics) are broadcast from rank 0
        # before each forward, so after the last one they differ: make every replica rank 0's model.
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)
    digest = state_dict_sha256(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"weights_rank{info.rank}.sha256").write_text(digest + "\n", encoding="utf-8")
    return TrainResult(iteration, history, out_dir, last_path)


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fit.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from OUT/last.pt, or from the given checkpoint",
    )
    parser.add_argument("--out", help="output folder (overrides run.out_dir)")
    parser.add_argument("--iterations", type=int, help="schedule length (overrides schedule.iterations)")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many iterations")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config, hierarchy = load_config(args.config, check_data=False)
        overrides: dict[str, dict] = {}
        if args.out:
            overrides["run"] = {"out_dir": args.out}
        if args.iterations is not None:
            if args.iterations <= 0:
                raise ConfigError(f"--iterations: expected > 0, got {args.iterations}")
            overrides["schedule"] = {"iterations": args.iterations}
        if overrides:
            config = config.with_overrides(**overrides)
        result = train(config, hierarchy, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: iteration {result.iteration}, checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
