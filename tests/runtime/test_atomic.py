"""Atomic output: a failed write keeps the old file and leaves no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from hiseg_ros.atomic import atomic_output, atomic_write_bytes


def test_write_replaces_the_file_whole(tmp_path: Path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="crash"), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
