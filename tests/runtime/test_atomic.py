"""Atomic output: a failed write keeps the old file (or folder) and leaves no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from hiseg_ros.atomic import atomic_folder, atomic_output, atomic_write_bytes


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


def test_folder_appears_whole_and_replaces_the_old_one(tmp_path: Path):
    target = tmp_path / "result"
    with atomic_folder(target) as staging:
        assert staging.name == "result" and staging.is_dir() and not target.exists()
        (staging / "metrics.json").write_text("1")
    assert (target / "metrics.json").read_text() == "1"
    (target / "old_only.txt").write_text("x")
    with atomic_folder(target) as staging:
        (staging / "metrics.json").write_text("2")
        assert (target / "old_only.txt").is_file()  # readers still see the old folder
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json"]
    assert (target / "metrics.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_failed_folder_keeps_the_old_one_and_leaves_nothing_behind(tmp_path: Path):
    target = tmp_path / "bag"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(RuntimeError, match="camera unplugged"), atomic_folder(target) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("camera unplugged")
    assert [p.name for p in target.iterdir()] == ["keep"]
    assert [p.name for p in tmp_path.iterdir()] == ["bag"]


def test_folder_left_to_the_writer_must_be_created(tmp_path: Path):
    target = tmp_path / "drive"
    with atomic_folder(target, create=False) as staging:
        assert not staging.exists() and staging.parent.is_dir()
        staging.mkdir()  # e.g. the rosbags Writer
        (staging / "drive.mcap").write_bytes(b"")
    assert (target / "drive.mcap").is_file()
    with pytest.raises(FileNotFoundError, match="was not created"), atomic_folder(tmp_path / "none", create=False):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive"]


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    """A worker killed mid-write leaves ``.name.<pid>-<hex>.tmp``; only its owner's folder sweep removes it."""
    import subprocess
    import sys

    from hiseg_ros.atomic import remove_stale_temporaries, temporary_sibling

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: no process has this pid (reuse within the test is negligible)
    stale = tmp_path / f".a3.png.{dead_pid}-0123abcd.tmp"
    live = temporary_sibling(tmp_path / "a4.png")  # this process: still writing
    other = [tmp_path / "a3.png", tmp_path / ".hidden.tmp", tmp_path / f"x.{dead_pid}-0123abcd.tmp"]
    for path in (stale, live, *other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and all(p.exists() for p in other)
