"""Numbered, reusable stages of a job: each prints its header and duration, and records a manifest
(OUT/stages/<stage>.json) with the key of its inputs, so an unchanged stage is reused on the next run.

The main job (:mod:`training.jobs.main_job`) is a chain of these stages.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hiseg_ros.atomic import atomic_write_bytes


class StageError(RuntimeError):
    """A stage failed; the message says why (the stage is named by the caller)."""


class IncompleteError(RuntimeError):
    """The replay finished but its result is incomplete (frames lost, node died, ...)."""


def digest(*parts: Any) -> str:
    """A stable hash of JSON-able values."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pipeline:
    """Numbered stages with durations and manifests in OUT/stages/."""

    def __init__(self, out: Path, stages: tuple[str, ...], titles: dict[str, str] | None = None) -> None:
        self.out = out
        self.stages = stages
        self.titles = titles or {stage: stage for stage in stages}
        self.durations: dict[str, tuple[float, bool]] = {}

    def manifest_path(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    def reusable(self, stage: str, key: str, outputs: tuple[Path, ...] = ()) -> dict[str, Any] | None:
        """The stage's manifest when it was completed with ``key`` and its outputs still exist."""
        try:
            manifest = json.loads(self.manifest_path(stage).read_text())
        except (OSError, ValueError):
            return None
        if manifest.get("key") != key or not all(p.exists() for p in outputs):
            return None
        return manifest

    def invalidate(self, stage: str) -> None:
        self.manifest_path(stage).unlink(missing_ok=True)

    def complete(self, stage: str, key: str, **info: Any) -> dict[str, Any]:
        manifest = {"stage": stage, "key": key, **info}
        data = (json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n").encode()
        atomic_write_bytes(self.manifest_path(stage), data)
        return manifest

    def run(self, stage: str, body: Callable[[], tuple[Any, bool]], detail: str = "") -> Any:
        """Print the header, run ``body`` (-> (result, reused)), print the duration; name the stage on failure."""
        number = self.stages.index(stage) + 1
        print(f"\n[{number}/{len(self.stages)}] {self.titles[stage]}{' ' + detail if detail else ''}", flush=True)
        start = time.perf_counter()
        try:
            result, reused = body()
        except (IncompleteError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise StageError(f"stage {number}/{len(self.stages)} ({self.titles[stage]}) failed: {exc}") from exc
        seconds = time.perf_counter() - start
        self.durations[stage] = (seconds, reused)
        print(f"[{number}/{len(self.stages)}] {'reused' if reused else 'done'} in {seconds:.1f} s", flush=True)
        return result
