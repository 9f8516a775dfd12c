"""Training logs: one CSV row per logged iteration, PNG curves drawn from the CSV (matplotlib Agg).

The CSV is the source of truth (TensorBoard is not installed here; any spreadsheet or pandas reads
it). On resume the rows of iterations after the checkpoint are dropped, so a resumed run continues
one clean curve instead of repeating iterations.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

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
