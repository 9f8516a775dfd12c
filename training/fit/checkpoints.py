"""The checkpoints of a run folder: which files there are, what training state goes into them, and
reading them back for ``--resume`` and ``checkpoint.init``.

The file format, its one writer and its one reader are :mod:`hiseg_ros.engines.checkpoint` (the
node reads the same files); a resumed checkpoint is read with the node's safe loader
(``weights_only=True``) and refused with the node's message. Everything the loop keeps is stored as
tensors and plain containers for that reason (see :func:`training_state`).

Rank 0 writes ``ckpt_<iteration>.pt`` every ``checkpoint.every`` iterations and at the end: to a
temporary file, fsync'ed and renamed over the final name, then the folder is fsync'ed, so a process
killed at any moment leaves only complete files. ``last.pt`` is a hard link to the newest; older
ones beyond ``checkpoint.keep`` are removed.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiseg_ros.atomic import atomic_output
from hiseg_ros.engines.checkpoint import CheckpointFormatError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training.fit.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)

PREFIX = "ckpt_"
LAST = "last.pt"
RESUME_KEYS = ("iteration", "optimizer", "scheduler")  # without them a file can only initialise a run


class CheckpointMismatchError(ConfigError):
    """A checkpoint given to --resume or checkpoint.init cannot be read or does not fit the config."""


# --------------------------------------------------------------------------- reading
def load_resume(
    resume: str | bool | None, config: TrainConfig, hierarchy: Hierarchy, world_size: int
) -> LoadedCheckpoint | None:
    """The checkpoint to continue from: ``OUT/last.pt`` for ``resume=True``, the given file, or none."""
    if not resume:
        return None
    path = Path(config.run.out_dir) / LAST if resume is True else Path(resume)
    if not path.is_file():
        raise CheckpointMismatchError(f"--resume: no checkpoint at {path}")
    loaded = _load_compatible(path, config, hierarchy)
    missing = [k for k in RESUME_KEYS if k not in loaded.training]
    if missing:
        raise CheckpointMismatchError(
            f"{path}: holds no training state to resume from (lacks {missing}); use it as checkpoint.init instead"
        )
    if loaded.training.get("world_size", world_size) != world_size:
        log.warning(
            "resuming a run of world size %s with %s processes: the data order changes from here on",
            loaded.training["world_size"],
            world_size,
        )
    return loaded


def load_init(config: TrainConfig, hierarchy: Hierarchy) -> LoadedCheckpoint | None:
    """The weights ``checkpoint.init`` names, if any."""
    if config.checkpoint.init is None:
        return None
    return _load_compatible(Path(config.checkpoint.init), config, hierarchy)


def _load_compatible(path: Path, config: TrainConfig, hierarchy: Hierarchy) -> LoadedCheckpoint:
    try:
        return load_checkpoint(path, expected_hierarchy=hierarchy, expected_config=config.model)
    except CheckpointFormatError as exc:  # a ConfigError for the command line: exit status 2
        raise CheckpointMismatchError(str(exc)) from None


# --------------------------------------------------------------------------- training state
def training_state(
    iteration: int,
    world_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """What ``--resume`` needs besides the weights, in the checkpoint's ``TRAINING_KEYS``."""
    return {
        "iteration": iteration,
        "world_size": world_size,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": rng_state(),
        "config": config.to_dict(),
        "metrics": dict(metrics),
    }


def restore_training_state(
    training: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    """Undo :func:`training_state` (the weights are loaded separately)."""
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    if training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    if training.get("rng"):
        set_rng_state(training["rng"])


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python generator states; numpy's key array as an int64 tensor."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"]["key"] = torch.from_numpy(numpy["state"]["key"].astype(np.int64))
    state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    if isinstance(numpy, Mapping):  # numpy's own tuple (files written before the tensor key) goes in as it is
        numpy = {**numpy, "state": {**numpy["state"], "key": numpy["state"]["key"].numpy().astype(np.uint32)}}
    np.random.set_state(numpy)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the run folder
def write_checkpoint(
    out_dir: Path, model: HierarchicalSegNet, hierarchy: Hierarchy, config: TrainConfig, training: Mapping[str, Any]
) -> Path:
    """``ckpt_<iteration>.pt`` (crash-safe), ``last.pt`` pointing at it, the oldest beyond ``keep`` removed."""
    path = out_dir / f"{PREFIX}{training['iteration']:08d}.pt"
    save_checkpoint(path, model, hierarchy, config.model, training)
    _fsync_dir(out_dir)
    _link_last(path)
    for old in checkpoint_paths(out_dir)[: -config.checkpoint.keep]:
        old.unlink(missing_ok=True)
    return path


def checkpoint_paths(out_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first (``last.pt`` not included)."""
    return sorted(out_dir.glob(f"{PREFIX}*.pt"))


def clean_temporaries(out_dir: Path) -> None:
    """Remove partial files a killed writer left behind (never a complete checkpoint)."""
    for tmp in out_dir.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _link_last(target: Path) -> None:
    last = target.with_name(LAST)
    tmp = target.with_name(f".{LAST}.tmp{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(target, tmp)
        os.replace(tmp, last)
        _fsync_dir(last.parent)
    except OSError:  # file systems without hard links
        with atomic_output(last) as copy:
            shutil.copyfile(target, copy)
        _fsync_dir(last.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the platform can open a folder)."""
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
