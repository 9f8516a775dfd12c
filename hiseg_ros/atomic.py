"""Atomic file output, used for every file the project writes that someone else may read.

A file is written under a hidden temporary name in its final folder and renamed over the
target only once complete (``os.replace`` is atomic on one file system): readers see the old
file or the whole new one, and a process killed mid-write leaves at most a hidden ``.tmp``
file, never a truncated checkpoint, engine, model or report.

A folder (a bag, a result folder) is built the same way by :func:`atomic_folder`: beside its final
place under a hidden name, and renamed into place only once complete.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` (same file system, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


_TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")  # what temporary_sibling names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files in ``folder`` whose writer process is gone; return them.

    A process killed mid-write (a crashed worker of a pool, whose siblings the pool then
    terminates) cannot clean up after itself; whoever owns the folder calls this once those
    processes are gone. Files of live writers and every other file are left alone.
    """
    removed = []
    for entry in Path(folder).iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_file() and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


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


@contextmanager
def atomic_folder(path: str | Path, create: bool = True) -> Iterator[Path]:
    """Yield a staging path named like ``path`` to build the folder in; on success it replaces ``path``.

    The staging path is ``<parent>/.<name>.tmp-XXXX/<name>`` (same file system, and the same name
    for writers that name files after their folder, as rosbag2 does); ``create=False`` leaves
    creating it to such a writer. On success an existing ``path`` is moved aside, the new folder
    renamed into place and the old one removed; on error (or when nothing was created) the staging
    folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    staging = holder / path.name
    try:
        if create:
            staging.mkdir()  # the umask's permissions, as a plain mkdir (mkdtemp's holder is private)
        yield staging
        if not staging.is_dir():
            raise FileNotFoundError(f"{staging}: the folder for {path} was not created")
        old = None
        if path.exists():
            old = temporary_sibling(path)
            os.rename(path, old)
        try:
            os.rename(staging, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)  # put the previous folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
