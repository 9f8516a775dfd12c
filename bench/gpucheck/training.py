"""Training rows of the GPU check: the real training loop (``training.fit.train.train``) on the
default config, on synthetic scenes generated on the spot, at each batch size.

Overrides of the config (nothing else changes): the synthetic "small" preset as ``data_root``,
the config's per-dataset composition scaled to the batch size, ``augment.crop``, random-init
backbone (weights do not change the cost), ``run.device`` / ``run.num_workers``, a schedule of
``warmup + iterations + 1`` iterations, and checkpoints only at the end. The last iteration is
not timed (it ends with the checkpoint and the curves).

How it is timed without touching the loop: ``training.fit.loop.batch_loader`` is replaced for the
run by a wrapper whose iterator waits for the device (``torch.cuda.synchronize``), then times the
fetch of the next batch. Iteration *i* runs from asking for batch *i* to asking for batch *i + 1*
(data wait + synchronised compute); the data wait share is the time blocked on batches over that
wall time, i.e. the share of the time the GPU sat idle for want of data. The synchronisation also
keeps the loop from queuing the next step while the GPU still computes; ``sync=False`` leaves it
out (images/s as the loop runs on its own; the wait is then CPU time blocked, not GPU idle time).

Host synchronisations are counted, not assumed: on CUDA the run is under
``torch.cuda.set_sync_debug_mode("warn")``, which makes every call that blocks the host on the
device (a ``.item()``, a boolean gather, a copy from pageable memory) raise a warning; the timed
iterations' warnings are counted per step and by the line of code that caused them (the wrapper's
own ``synchronize`` runs with the mode off).

With ``profile_steps``, that many warm-up iterations just before the timed ones run under
``torch.profiler`` (CPU and CUDA activity), and the operations that took the most device time per
step are printed and kept in the row: where the step's time goes, on the machine that measured it.

Precision is read, not assumed: a global forward pre-hook records whether autocast was on and its
dtype during the loop's forward (the loop decides its mixed precision on CUDA from ``run.amp``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import importlib.util
import math
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from bench.gpucheck.report import FAILED, SKIPPED, Row, say_skip

# What the training import chain needs besides torch / numpy (the data, the augmentation, the log).
TRAINING_MODULES = ("yaml", "cv2", "PIL", "matplotlib")


@dataclass(frozen=True)
class TrainSettings:
    device: str  # "cuda" or "cpu"
    config: Path
    crop: tuple[int, int]
    batches: tuple[int, ...]
    warmup: int
    iterations: int
    num_workers: int
    sync: bool = True  # synchronise before each fetch: the wait is then GPU idle time
    profile_steps: int = 0  # warm-up iterations profiled (module docstring); 0: none
    loss_form: str = "auto"  # "gathered": the loss's CPU form on the GPU too (for comparison)


@dataclass
class LoaderTiming:
    """When the loop asked for each batch and how long it was blocked getting it."""

    asked: list[float] = field(default_factory=list)
    waited: list[float] = field(default_factory=list)
    syncs: list[int] = field(default_factory=list)  # host-sync warnings seen so far, at each ask


class TimedLoader:
    """The loop's DataLoader, its ``next()`` timed after the device finished the previous step."""

    def __init__(
        self,
        loader: Any,
        timing: LoaderTiming,
        sync: Callable[[], None],
        syncs: Callable[[], int] = lambda: 0,
        on_ask: Callable[[int], None] = lambda asked: None,
    ) -> None:
        self.loader, self.timing, self.sync, self.syncs, self.on_ask = loader, timing, sync, syncs, on_ask

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            self.sync()
            self.on_ask(len(self.timing.asked))
            self.timing.syncs.append(self.syncs())
            asked = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.timing.asked.append(asked)
            self.timing.waited.append(time.perf_counter() - asked)
            yield batch


@dataclass
class PrecisionProbe:
    """The autocast dtype of any module forward during the run (a global forward pre-hook);
    ``None``: every forward ran without autocast (float32)."""

    amp: str | None = None

    def __call__(self, module: torch.nn.Module, args: Any) -> None:
        if self.amp is None:
            self.amp = autocast_dtype()


def autocast_dtype() -> str | None:
    """``"bf16 AMP"`` or ``"fp16 AMP"`` while CUDA autocast is on, else None."""
    if not torch.is_autocast_enabled("cuda"):
        return None
    dtype = torch.get_autocast_dtype("cuda")
    return {torch.bfloat16: "bf16 AMP", torch.float16: "fp16 AMP"}.get(dtype, f"{dtype} AMP")


def scaled_composition(per_batch: Sequence[int], batch: int) -> list[int]:
    """The config's per-dataset counts scaled to ``batch`` images (largest remainders, ties in order)."""
    total = sum(per_batch)
    shares = [batch * n / total for n in per_batch]
    counts = [math.floor(s) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in order[: batch - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class StepProfiler:
    """``torch.profiler`` over the iterations ``start`` .. ``start + steps - 1`` (called with the
    number of batches asked so far, before each ask); ``top``: the operations with the most device
    time, per step."""

    start: int
    steps: int
    top: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    _profile: Any = None

    def __call__(self, asked: int) -> None:
        try:
            if self.steps > 0 and asked == self.start:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self._profile = torch.profiler.profile(activities=activities)
                self._profile.__enter__()
            elif self._profile is not None and asked == self.start + self.steps:
                profile, self._profile = self._profile, None
                profile.__exit__(None, None, None)
                self.top = top_operations(profile.key_averages(), self.steps)
        except Exception as exc:  # a profiler that fails must not cost the throughput figures
            self._profile, self.error = None, f"{type(exc).__name__}: {exc}"[:300]


def top_operations(events: Any, steps: int, limit: int = 25) -> list[dict[str, Any]]:
    """The ``limit`` operations with the most self device time, in ms and calls per step."""
    rows = [
        {
            "op": e.key,
            "device_ms_per_step": e.self_device_time_total / 1000.0 / steps,
            "cpu_ms_per_step": e.self_cpu_time_total / 1000.0 / steps,
            "calls_per_step": e.count / steps,
        }
        for e in events
    ]
    rows.sort(key=lambda r: r["device_ms_per_step"], reverse=True)
    return rows[:limit]


def quiet_synchronize() -> None:
    """``torch.cuda.synchronize`` with the sync debug mode off: the wrapper's wait is not the loop's."""
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode(mode)


def missing_modules() -> list[str]:
    return [m for m in TRAINING_MODULES if importlib.util.find_spec(m) is None]


def measure_training(settings: TrainSettings, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    """One row per batch size, and what every run shared (data, crop, workers, precision)."""
    cuda = settings.device == "cuda"
    rows = [Row("train", "training loop, train()", *settings.crop, b, "?") for b in settings.batches]
    info: dict[str, Any] = {"num_workers": settings.num_workers, "config": str(settings.config)}
    missing = missing_modules()
    if missing:
        reason = f"the training code needs {', '.join(missing)} (not importable here)"
        return [_not_run(r, SKIPPED, reason) for r in rows], info

    from training.data.synthetic.generate import generate
    from training.fit import loop
    from training.fit.config import load_config
    from training.fit.train import train

    start = time.perf_counter()
    data = tmp / "synthetic"
    generate(data, "small", seed=0)
    info["synthetic_s"] = time.perf_counter() - start
    config, hierarchy = load_config(settings.config, check_data=False)
    info |= {"base_height": config.augment.base_height, "scale": list(config.augment.scale), "amp": config.run.amp}
    sync = quiet_synchronize if cuda and settings.sync else _no_sync
    original = loop.batch_loader
    for row in rows:
        counts = scaled_composition([d.per_batch for d in config.datasets], row.batch)
        datasets = tuple(
            dataclasses.replace(d, root=Path(d.root).name, per_batch=n)
            for d, n in zip(config.datasets, counts, strict=True)
        )
        run = dataclasses.replace(config, data_root=str(data), datasets=datasets).with_overrides(
            augment={"crop": settings.crop},
            model={"pretrained": None},
            schedule={"iterations": settings.warmup + settings.iterations + 1, "warmup_iterations": 0},
            run={
                "out_dir": str(tmp / f"train_b{row.batch}"),
                "num_workers": settings.num_workers,
                "log_every": 10**9,
                "device": settings.device,
            },
            checkpoint={"every": 10**9, "keep": 1, "init": None},
        )
        timing, probe = LoaderTiming(), PrecisionProbe()
        caught: list[str] = []  # where each host synchronisation happened (CUDA)

        first = row is rows[0] and cuda
        profiler = StepProfiler(max(0, settings.warmup - 1 - settings.profile_steps), settings.profile_steps * first)

        def timed_loader(
            *args: Any,
            timing: LoaderTiming = timing,
            caught: list[str] = caught,
            profiler: StepProfiler = profiler,
            **kwargs: Any,
        ) -> TimedLoader:
            return TimedLoader(original(*args, **kwargs), timing, sync, lambda: len(caught), profiler)

        hook = torch.nn.modules.module.register_module_forward_pre_hook(probe)
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with contextlib.ExitStack() as stack:
                stack.enter_context(mock.patch.object(loop, "batch_loader", timed_loader))
                if settings.loss_form == "gathered":
                    gathered = functools.partial(loop.HierarchicalLoss, dense=False)
                    stack.enter_context(mock.patch.object(loop, "HierarchicalLoss", gathered))
                stack.enter_context(_sync_warnings(cuda, caught))
                result = train(run, hierarchy, progress=False)
            if cuda:
                row.peak_gpu_mib = torch.cuda.max_memory_allocated() / 2**20
                row.extra["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
            del result
            _fill(row, timing, settings, probe.amp or "fp32", "/".join(str(n) for n in counts))
            row.extra["loss_form"] = settings.loss_form
            if settings.loss_form != "auto":
                row.note += f", loss form {settings.loss_form}"
            if profiler.top or profiler.error:
                row.extra |= {"profile_steps": profiler.steps, "profile": profiler.top, "profile_error": profiler.error}
                print(format_profile(row, profiler), flush=True)
            if cuda:
                try:  # a count that fails must not cost the throughput figures
                    _count_syncs(row, timing, settings, caught)
                except Exception as exc:
                    row.extra["host_syncs_error"] = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:
            _not_run(row, FAILED, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            hook.remove()
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
    return rows, info


def format_profile(row: Row, profiler: StepProfiler, limit: int = 15) -> str:
    head = f"profile, training batch {row.batch}, {profiler.steps} warm-up steps: ms per step on the device"
    if profiler.error:
        return f"{head}: failed ({profiler.error})"
    total = sum(r["device_ms_per_step"] for r in profiler.top)
    lines = [f"{head} (top {len(profiler.top)} ops: {total:.1f} ms)"]
    lines += [
        f"  {r['device_ms_per_step']:8.2f} ms  {r['calls_per_step']:6.1f} calls  {r['op'][:90]}"
        for r in profiler.top[:limit]
    ]
    return "\n".join(lines)


def _no_sync() -> None:
    pass


@contextlib.contextmanager
def _sync_warnings(cuda: bool, caught: list[str]) -> Iterator[None]:
    """On CUDA: the place (file:line) of every host synchronisation of the loop appended to ``caught``
    while it runs (module docstring); other warnings are shown as usual."""
    if not cuda:
        yield
        return
    with warnings.catch_warnings():  # restores the filters and ``showwarning`` afterwards
        shown = warnings.showwarning

        def record(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if "synchroniz" in str(message):
                caught.append(f"{Path(filename).name}:{lineno}")
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.filterwarnings("always", message=".*synchroniz")  # every one, not once per line
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(0)


def _count_syncs(row: Row, timing: LoaderTiming, settings: TrainSettings, caught: list[str]) -> None:
    """Host synchronisations per timed step, and the lines that caused them (most frequent first)."""
    first, last = settings.warmup, settings.warmup + settings.iterations
    per_step = [timing.syncs[i + 1] - timing.syncs[i] for i in range(first, last)]
    where = Counter(caught[timing.syncs[first] : timing.syncs[last]])
    row.extra |= {"host_syncs_per_step": statistics.median(per_step), "host_syncs_at": dict(where.most_common(8))}
    row.note += f", {statistics.median(per_step):g} host syncs per step"


def _fill(row: Row, timing: LoaderTiming, settings: TrainSettings, precision: str, composition: str) -> None:
    """Per-iteration wall times of the timed iterations (after the warm-up, before the last one)."""
    first, last = settings.warmup, settings.warmup + settings.iterations
    if len(timing.asked) < last + 1:
        raise RuntimeError(f"the loop asked for {len(timing.asked)} batches, expected {last + 1}")
    walls = [timing.asked[i + 1] - timing.asked[i] for i in range(first, last)]
    waits = timing.waited[first:last]
    row.precision = precision
    row.median_ms = 1000.0 * statistics.median(walls)
    row.min_ms = 1000.0 * min(walls)
    row.images_per_s = row.batch * len(walls) / sum(walls)
    row.data_wait = sum(waits) / sum(walls)
    row.note = (
        f"{len(walls)} timed + {settings.warmup} warm-up iterations, {settings.num_workers} loader workers, "
        f"per dataset {composition}"
    )
    row.extra |= {"walls_s": walls, "waits_s": waits, "composition": composition, "synchronised": settings.sync}


def _not_run(row: Row, status: str, reason: str) -> Row:
    row.status, row.note = status, reason
    return say_skip(row)
