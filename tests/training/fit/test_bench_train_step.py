"""bench/bench_train_step.py takes a real iteration of a real config apart and prints every part."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tiny_training import make_tiny_data, tiny_config, write_config

from bench.bench_train_step import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_prints_the_parts_of_an_iteration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", tiny_config(make_tiny_data(tmp_path / "data"), tmp_path / "run"))
    assert main(["--config", str(config), "--threads", "1", "--batches", "2", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 images of 64x128 per batch" in out
    parts = dict(re.findall(r"(forward|loss|backward|update) (\d+\.\d+) s", out))
    assert set(parts) == {"forward", "loss", "backward", "update"} and float(parts["forward"]) > 0
    assert re.search(r"batch production \(one process\): \d+\.\d+ s per batch", out)
    assert re.search(r"argmax\(1\) \d+\.\d ms, max\(1\)\.indices \d+\.\d ms", out)
