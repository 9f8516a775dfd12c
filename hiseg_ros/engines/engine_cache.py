"""On-disk cache of built TensorRT engines (pure Python: testable without TensorRT).

Building an engine takes minutes on a Jetson, so it is built once and reused. An engine is only
valid for the exact model, TensorRT version and GPU it was built for, and it bakes in the
precision, the optimisation profile, the workspace limit (it bounds the tactics) and, for INT8,
the calibration images; all of these form the :class:`EngineCacheKey`. A lookup hits only when
the stored key equals the wanted one, so any change rebuilds, and nothing else does.

Entries are ``<model>-<digest>.engine`` plus a ``.json`` sidecar holding the key (for humans, and
to detect digest-prefix collisions). Both are written atomically (temporary file in the cache
folder + ``os.replace``): a node killed mid-write leaves no half engine behind.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

__all__ = [
    "BUILD_RECIPE_VERSION",
    "EngineCache",
    "EngineCacheKey",
    "sha256_file",
]

BUILD_RECIPE_VERSION = 1
"""Bump when the way engines are built changes (graph adaptation, builder flags): old entries then miss."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks (models and checkpoints can be large).

    The project's one file digest (the main job records checkpoints and models by it).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a built engine depends on. ``model_name`` only names the file (not in the digest)."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    workspace_bytes: int
    calibration: str = ""
    recipe: int = BUILD_RECIPE_VERSION
    model_name: str = field(default="model", compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model_name")
        data["profile"] = [list(s) for s in self.profile]
        return data

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def file_stem(self) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.model_name)[:64] or "model"
        return f"{name}-{self.precision}-{self.digest()[:24]}"


class EngineCache:
    """A folder of serialized engines keyed by :class:`EngineCacheKey`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def engine_path(self, key: EngineCacheKey) -> Path:
        return self.directory / f"{key.file_stem}.engine"

    def key_path(self, key: EngineCacheKey) -> Path:
        return self.directory / f"{key.file_stem}.json"

    def load(self, key: EngineCacheKey) -> bytes | None:
        """The stored engine for exactly ``key``, or ``None`` (missing, other key, unreadable)."""
        try:
            stored = json.loads(self.key_path(key).read_text())
            if stored != key.to_dict():
                return None
            return self.engine_path(key).read_bytes()
        except (OSError, ValueError):
            return None

    def store(self, key: EngineCacheKey, engine: bytes) -> Path:
        """Store atomically: the engine first, then the key that makes it visible to :meth:`load`."""
        path = self.engine_path(key)
        atomic_write_bytes(path, engine)
        atomic_write_bytes(self.key_path(key), json.dumps(key.to_dict(), indent=1, sort_keys=True).encode())
        return path

    def invalidate(self, key: EngineCacheKey) -> None:
        """Forget ``key``'s entry (e.g. the runtime refused to deserialize it)."""
        self.key_path(key).unlink(missing_ok=True)
        self.engine_path(key).unlink(missing_ok=True)
