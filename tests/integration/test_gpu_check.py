"""bench/gpu_check.py: the CPU smoke run (``--device cpu --tiny``) of the command that measures
the GPU path, so that it still runs when the GPU machine is lent; and its pure parts."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.gpucheck.report import Row, check_targets, format_table
from bench.gpucheck.training import LoaderTiming, TimedLoader, scaled_composition
from training import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"
ROS_MODULE = re.compile(r"^(rclpy|rosidl|rmw|rcl_|launch|ament|rosbags|rpyutils)|_msgs(\.|$)|_interfaces(\.|$)")
ROW_KEYS = {
    "part": str,
    "what": str,
    "height": int,
    "width": int,
    "batch": int,
    "precision": str,
    "status": str,
    "note": str,
    "extra": dict,
}
NUMBERS = ("median_ms", "min_ms", "images_per_s", "peak_gpu_mib", "data_wait")


def _check_row(row: dict) -> None:
    assert set(row) == set(ROW_KEYS) | set(NUMBERS), row
    for key, kind in ROW_KEYS.items():
        assert isinstance(row[key], kind), (key, row)
    for key in NUMBERS:
        assert row[key] is None or isinstance(row[key], float), (key, row)
    assert row["status"] in ("ok", "skipped", "failed")


def _imported_modules(stderr: str) -> list[str]:
    """Module names from ``python -X importtime``'s lines: ``import time: self | cumulative | name``."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.append(name)
    return names


@pytest.mark.slow
def test_cpu_tiny_run_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    cmd = [sys.executable, "-X", "importtime", str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # No ROS in the import chain (the GPU machine has none), and the chain is Python 3.10 syntax.
    modules = _imported_modules(proc.stderr)
    assert "training.fit.loop" in modules and "hiseg_ros.engines.torch_graph" in modules
    assert [m for m in modules if ROS_MODULE.search(m)] == []
    ours = [m.split(".") for m in modules if m.split(".")[0] in ("hiseg_ros", "training", "bench")]
    files = [REPO.joinpath(*parts).with_suffix(".py") for parts in ours]
    files += [REPO.joinpath(*parts, "__init__.py") for parts in ours]
    files = [f for f in files if f.is_file()]
    assert REPO / "training" / "fit" / "loop.py" in files
    for path in files:
        ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 10))

    # The table: its header, two training rows, every inference variant at both tiny sizes.
    lines = proc.stdout.splitlines()
    header = "| part | what | input | batch | precision | median ms | min ms | images/s | peak GPU MiB | data wait |"
    assert any(line.startswith(header) for line in lines), proc.stdout
    train_lines = [line for line in lines if line.startswith("| train | training loop")]
    assert [line.split(" | ")[3] for line in train_lines] == ["1", "2"]
    assert all(" | ok | " in line for line in train_lines), train_lines
    variants = ("torch engine", "decision graph, eager", "decision graph, CUDA graph")
    variants += ("decision graph, torch.compile", "onnxruntime", "tensorrt")
    for variant in variants:
        found = [line for line in lines if line.startswith(f"| infer | {variant}")]
        assert len(found) == 2, (variant, proc.stdout)
    skip_line = "  skipped: infer decision graph, CUDA graph (device tensors) 64x128: CUDA graphs need --device cuda"
    assert skip_line in lines
    assert any(line.startswith("targets (data-centre GPU") and "not checked" in line for line in lines)

    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"schema", "env", "settings", "train", "inference", "targets"}
    assert data["env"]["device"] == "cpu" and isinstance(data["env"]["torch"], str)
    assert data["settings"]["num_workers"] == 1 and data["settings"]["tiny"] is True
    for row in data["train"] + data["inference"]:
        _check_row(row)
    for row in data["train"]:
        assert row["status"] == "ok" and row["precision"] == "fp32", row
        assert row["images_per_s"] > 0 and row["median_ms"] > 0 and 0 <= row["data_wait"] <= 1
        assert row["peak_gpu_mib"] is None and len(row["extra"]["walls_s"]) == 2
    by_what = {}
    for row in data["inference"]:
        by_what.setdefault(row["what"].split(",")[0], []).append(row)
    for what in ("torch engine", "onnxruntime CPUExecutionProvider"):
        assert [(r["height"], r["width"]) for r in by_what[what]] == [(64, 128), (128, 256)]
        for row in by_what[what]:
            assert row["status"] == "ok" and row["median_ms"] > 0 and row["images_per_s"] > 0, row
    eager = [r for r in data["inference"] if r["what"].startswith("decision graph, eager")]
    assert [r["status"] for r in eager] == ["ok", "ok"] and all(r["median_ms"] > 0 for r in eager)
    skipped = [r for r in data["inference"] if r["status"] == "skipped"]
    assert skipped and all(r["note"] for r in skipped)
    assert [t["name"] for t in data["targets"]] == ["train_512x1024", "infer_512x1024", "infer_1024x2048"]
    assert all(t["met"] is None for t in data["targets"])


def test_composition_scales_the_config_batch() -> None:
    assert scaled_composition([1, 2, 1, 1], 5) == [1, 2, 1, 1]
    assert scaled_composition([1, 2, 1, 1], 10) == [2, 4, 2, 2]
    assert scaled_composition([1, 2, 1, 1], 8) == [2, 3, 2, 1]
    assert scaled_composition([1, 2, 1, 1], 16) == [3, 7, 3, 3]
    assert scaled_composition([1, 2, 1, 1], 1) == [0, 1, 0, 0]
    assert all(sum(scaled_composition([3, 1, 0, 2], b)) == b for b in range(1, 40))


def test_timed_loader_measures_the_wait_for_each_batch() -> None:
    def slow_batches():
        for i in range(3):
            time.sleep(0.05)
            yield i

    class Loader:
        def __iter__(self):
            return slow_batches()

        def __len__(self) -> int:
            return 3

    timing = LoaderTiming()
    syncs = []
    got = []
    for batch in TimedLoader(Loader(), timing, lambda: syncs.append(1)):
        got.append(batch)
        time.sleep(0.02)  # the "step"
    assert got == [0, 1, 2] and len(syncs) == 4  # before every fetch, the final one included
    assert len(timing.asked) == len(timing.waited) == 3
    assert all(w >= 0.045 for w in timing.waited)
    assert timing.asked[1] - timing.asked[0] >= timing.waited[0] + 0.02


def _row(part: str, what: str, size: tuple[int, int], rate: float, wait: float | None = None, fp16=True) -> Row:
    return Row(part, what, *size, 16, "fp16", images_per_s=rate, data_wait=wait, extra={"torch_fp16": fp16})


def test_targets_take_the_best_row_and_their_thresholds() -> None:
    rows = [
        _row("train", "loop", (512, 1024), 150.0, 0.02),
        _row("train", "loop", (512, 1024), 210.0, 0.12),  # fast enough, but waits for data
        _row("infer", "eager", (512, 1024), 250.0),
        _row("infer", "cuda graph", (512, 1024), 320.0),
        _row("infer", "tensorrt", (512, 1024), 900.0, fp16=False),  # not the torch backend
        _row("infer", "eager", (1024, 2048), 99.0),
    ]
    targets = {t.name: t for t in check_targets(rows, full_size_cuda=True)}
    assert targets["train_512x1024"].measured == 210.0 and targets["train_512x1024"].met is False
    assert targets["infer_512x1024"].measured == 320.0 and targets["infer_512x1024"].met is True
    assert "cuda graph" in targets["infer_512x1024"].detail
    assert targets["infer_1024x2048"].met is False
    rows[1].data_wait = 0.05
    assert check_targets(rows, full_size_cuda=True)[0].met is True
    assert all(t.met is None for t in check_targets(rows, full_size_cuda=False))
    skipped = Row("infer", "eager", 512, 1024, 1, "fp16", status="skipped", note="no | GPU")
    assert check_targets([skipped], True)[1].measured is None
    table = format_table([skipped]).splitlines()
    assert len(table) == 3 and table[2].count("|") == table[0].count("|")  # a | in a note cannot add a column


def test_host_syncs_are_counted_per_timed_step() -> None:
    """The count itself (the warnings come from ``torch.cuda.set_sync_debug_mode``, which needs CUDA:
    here the recorded places are given)."""
    from bench.gpucheck.training import TrainSettings, _count_syncs

    settings = TrainSettings("cuda", Path("c.yaml"), (8, 8), (1,), warmup=1, iterations=3, num_workers=0)
    timing = LoaderTiming(syncs=[0, 5, 5, 7, 8, 9])  # at each ask: syncs recorded so far
    caught = ["x.py:1"] * 5 + ["loss.py:3", "loss.py:3", "loop.py:9", "ckpt.py:1"]
    row = Row("train", "t", 8, 8, 1, "bf16 AMP", note="n")
    _count_syncs(row, timing, settings, caught)
    assert row.extra["host_syncs_per_step"] == 1  # steps 2-4 saw 0, 2 and 1
    assert row.extra["host_syncs_at"] == {"loss.py:3": 2, "loop.py:9": 1}  # the warm-up step's 5 left out
    assert row.note == "n, 1 host syncs per step"


def test_step_profiler_profiles_the_asked_steps_only() -> None:
    from bench.gpucheck.training import StepProfiler

    profiler = StepProfiler(start=2, steps=2)
    x = torch.randn(64, 64)
    for asked in range(6):  # what TimedLoader does: call, then fetch and run one step
        profiler(asked)
        for _ in range(3 if 2 <= asked < 4 else 50):  # 3 matmuls per profiled step
            x = torch.tanh(x @ x)
    assert profiler.error == "" and profiler._profile is None
    mm = [r for r in profiler.top if r["op"] == "aten::mm"]
    assert mm and mm[0]["calls_per_step"] == 3  # 6 calls over the 2 profiled steps
    assert all(r["device_ms_per_step"] >= 0 and r["cpu_ms_per_step"] >= 0 for r in profiler.top)
