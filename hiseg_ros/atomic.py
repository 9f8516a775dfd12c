"""Atomic file output, used for every file the project writes that someone else may read.

A file is written under a hidden temporary name in its final folder and renamed over the
target only once complete (``os.replace`` is atomic on one file system): readers see the old
file or the whole new one, and a process killed mid-write leaves at most a hidden ``.tmp``
file, never a truncated checkpoint, engine, model or report.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` (same file system, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_output(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    ``fsync`` flushes the data to disk before the rename, so a power cut cannot leave the new
    name pointing at missing data; bulk writers whose whole folder is renamed later may skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)
