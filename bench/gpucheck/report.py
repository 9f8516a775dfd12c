"""What the GPU check measured: one :class:`Row` per measurement, the table, the targets, the JSON.

A row that could not be measured is still a row (``status`` ``skipped`` or ``failed`` and the
reason in ``note``), so the table and the JSON always say what was left out and why.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiseg_ros.atomic import atomic_write_bytes

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
TABLE_COLUMNS = (
    "part",
    "what",
    "input",
    "batch",
    "precision",
    "median ms",
    "min ms",
    "images/s",
    "peak GPU MiB",
    "data wait",
    "status",
    "note",
)


@dataclass
class Row:
    """One measurement: a training run (``part="train"``) or an inference variant at one size.

    ``median_ms`` / ``min_ms``: per iteration (train) or per call (infer); ``images_per_s``: the
    training throughput, or the inference frames per second (batch 1: ``1000 / median_ms``).
    ``data_wait``: the share of the training wall time spent blocked on the next batch (0..1).
    """

    part: str
    what: str
    height: int
    width: int
    batch: int
    precision: str
    status: str = OK
    note: str = ""
    median_ms: float | None = None
    min_ms: float | None = None
    images_per_s: float | None = None
    peak_gpu_mib: float | None = None
    data_wait: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        wait = "-" if self.data_wait is None else f"{100.0 * self.data_wait:.1f} %"
        return [
            self.part,
            self.what,
            f"{self.height}x{self.width}",
            str(self.batch),
            self.precision,
            num(self.median_ms, ".2f"),
            num(self.min_ms, ".2f"),
            num(self.images_per_s, ".1f" if (self.images_per_s or 0.0) >= 10 else ".3g"),  # CPU rates are < 1
            num(self.peak_gpu_mib, ".0f"),
            wait,
            self.status,
            self.note.replace("|", "/"),
        ]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    samples: int


def time_calls(call: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None]) -> Timing:
    """Median and minimum wall time of ``call()`` in ms; ``sync`` (``torch.cuda.synchronize``) is
    called before each start and after each end, so GPU work is inside the time it belongs to."""
    for _ in range(warmup):
        call()
    sync()
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - start)
    return Timing(1000.0 * statistics.median(samples), 1000.0 * min(samples), len(samples))


def say_skip(row: Row) -> Row:
    """Print the clear one-line reason of a row that was not measured (as it happens), and return it."""
    if row.status != OK:
        print(f"  {row.status}: {row.part} {row.what} {row.height}x{row.width}: {row.note}", flush=True)
    return row


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """A figure the check is measured against (data-centre GPU, see docs/BENCHMARKS.md)."""

    name: str
    target: str
    measured: float | None  # None: nothing was measured for it
    met: bool | None  # None: not checked (CPU / --tiny run, or nothing measured)
    detail: str


def check_targets(rows: Sequence[Row], full_size_cuda: bool) -> list[Target]:
    """Training >= 200 images/s at 512x1024 with data wait < 10 %; network + decisions in fp16
    through the torch backend >= 300 fps at 512x1024 and >= 100 fps at 1024x2048 (best variant)."""
    targets = []
    train = [r for r in rows if r.part == "train" and r.status == OK and (r.height, r.width) == (512, 1024)]
    best = max(train, key=lambda r: r.images_per_s or 0.0, default=None)
    if best is None or best.images_per_s is None or best.data_wait is None:
        targets.append(Target("train_512x1024", ">= 200 images/s, data wait < 10 %", None, None, "not measured"))
    else:
        met = best.images_per_s >= 200.0 and best.data_wait < 0.10
        detail = f"{best.images_per_s:.1f} images/s, data wait {100 * best.data_wait:.1f} % at batch {best.batch}"
        targets.append(Target("train_512x1024", ">= 200 images/s, data wait < 10 %", best.images_per_s, met, detail))
    for (h, w), fps in (((512, 1024), 300.0), ((1024, 2048), 100.0)):
        infer = [
            r
            for r in rows
            if r.part == "infer" and r.status == OK and (r.height, r.width) == (h, w) and r.extra.get("torch_fp16")
        ]
        best = max(infer, key=lambda r: r.images_per_s or 0.0, default=None)
        name, goal = f"infer_{h}x{w}", f">= {fps:.0f} fps (torch backend, fp16, network + decisions)"
        if best is None or best.images_per_s is None:
            targets.append(Target(name, goal, None, None, "not measured"))
        else:
            detail = f"{best.images_per_s:.1f} fps ({best.what})"
            targets.append(Target(name, goal, best.images_per_s, best.images_per_s >= fps, detail))
    if not full_size_cuda:
        targets = [dataclasses.replace(t, met=None) for t in targets]
    return targets


def format_targets(targets: Sequence[Target], full_size_cuda: bool) -> str:
    head = "targets (data-centre GPU such as H100 / H200):"
    if not full_size_cuda:
        head += " not checked: they apply to --device cuda at full size"
    lines = [head]
    for t in targets:
        verdict = {True: "met", False: "NOT met", None: "-"}[t.met]
        lines.append(f"  {t.name}: {t.target}: {t.detail} -> {verdict}")
    return "\n".join(lines)


def write_json(path: Path, env: dict[str, Any], settings: dict[str, Any], rows: Sequence[Row], targets) -> Path:
    """The run as JSON: ``env``, ``settings``, ``train`` and ``inference`` (rows), ``targets``."""
    data = {
        "schema": 1,
        "env": env,
        "settings": settings,
        "train": [dataclasses.asdict(r) for r in rows if r.part == "train"],
        "inference": [dataclasses.asdict(r) for r in rows if r.part == "infer"],
        "targets": [dataclasses.asdict(t) for t in targets],
    }
    return atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode(), fsync=False)
