"""Training logs: one CSV row per logged iteration, PNG curves drawn from the CSV (matplotlib Agg),
and the progress bar; :class:`TrainingLog` is what the loop talks to.

The CSV is the source of truth (TensorBoard is not installed here; any spreadsheet or pandas reads
it). On resume the rows of iterations after the checkpoint are dropped, so a resumed run continues
one clean curve instead of repeating iterations.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hiseg_ros.atomic import atomic_output


class CsvLog:
    """Append-only CSV with a fixed header; ``iteration`` is the first column."""

    def __init__(self, path: Path | str, columns: Sequence[str], resume_after: int | None = None) -> None:
        self.path = Path(path)
        self.columns = ["iteration", *[c for c in columns if c != "iteration"]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_after is not None and self.path.is_file():
            rows = [r for r in read_csv(self.path) if _int(r.get("iteration")) <= resume_after]
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._file, self.columns, extrasaction="ignore")

    def write(self, row: Mapping[str, object]) -> None:
        """Append one row; flushed at once so a long run can be followed (``tail -f``) while it trains."""
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class TrainingLog:
    """Rank 0's report of a run: a CSV row every ``log_every`` iterations and at ``stop``, the
    progress bar (``progress``), and the curves redrawn at every checkpoint and at the end.

    A context manager: leaving it closes the bar and the CSV; the final curves are drawn only when
    training ended normally.
    """

    def __init__(
        self,
        out_dir: Path,
        classifiers: Sequence[str],
        start: int,
        stop: int,
        log_every: int,
        resumed: bool,
        progress: bool,
    ) -> None:
        self.classifiers = list(classifiers)
        self.stop = stop
        self.log_every = log_every
        self.plots = out_dir / "plots"
        columns = ["loss", *[f"loss/{n}" for n in self.classifiers], *[f"pixels/{n}" for n in self.classifiers]]
        columns += ["lr", "images_per_s", "seconds"]
        self.csv = CsvLog(out_dir / "train_log.csv", columns, resume_after=start if resumed else None)
        self.bar: Any = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=start, desc="train", unit="it", dynamic_ncols=True, file=sys.stderr)

    def iteration(
        self,
        iteration: int,
        metrics: Mapping[str, float],
        pixels: Sequence[int],
        lr: float,
        images: int,
        seconds: float,
    ) -> None:
        """Iteration ``iteration`` (counted from 1) is done: ``metrics`` are ``loss`` and ``loss/<classifier>``."""
        images_per_s = images / seconds if seconds > 0 else 0.0
        if iteration % self.log_every == 0 or iteration == self.stop:
            counts = {f"pixels/{n}": c for n, c in zip(self.classifiers, pixels, strict=True)}
            self.csv.write(
                {
                    "iteration": iteration,
                    **metrics,
                    **counts,
                    "lr": lr,
                    "images_per_s": images_per_s,
                    "seconds": seconds,
                }
            )
        if self.bar is not None:
            short = {n[:10]: f"{metrics[f'loss/{n}']:.3f}" for n in self.classifiers}
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", **short, img_s=f"{images_per_s:.1f}", refresh=False)
            self.bar.update(1)

    def checkpoint_written(self) -> None:
        """Make the CSV durable up to the checkpoint and redraw the curves."""
        self.csv.flush()
        plot_curves(self.csv.path, self.plots)

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.bar is not None:
            self.bar.close()
        self.csv.close()
        if kind is None:
            plot_curves(self.csv.path, self.plots)


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_curves(csv_path: Path | str, out_dir: Path | str) -> list[Path]:
    """``losses.png`` (total and per-classifier losses, log scale), ``lr.png`` and ``speed.png``."""
    rows = read_csv(csv_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not rows:
        return []
    its = [_int(r["iteration"]) for r in rows]
    columns = list(rows[0].keys())

    def series(col: str) -> list[float]:
        out = []
        for r in rows:
            try:
                out.append(float(r[col]))
            except (TypeError, ValueError):
                out.append(math.nan)
        return out

    written = []
    loss_cols = [c for c in columns if c == "loss" or c.startswith("loss/")]
    groups = [
        ("losses.png", loss_cols, "loss", True),
        ("lr.png", [c for c in columns if c == "lr"], "learning rate", False),
        ("speed.png", [c for c in columns if c == "images_per_s"], "images / s", False),
    ]
    for name, cols, ylabel, log in groups:
        if not cols:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for col in cols:
            values = series(col)
            if log and not any(v > 0 for v in values if not math.isnan(v)):
                continue
            ax.plot(its, values, label=col, linewidth=1.5 if col == "loss" else 1.0)
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / name
        with atomic_output(path, fsync=False) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written
