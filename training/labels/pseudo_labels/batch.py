"""Batch generation of pseudo-label files (the engine of ``python -m training.labels.pseudo_labels generate``).

Lives outside ``__main__`` on purpose: worker processes are started with ``spawn`` and must import
the worker functions by module name, which ``multiprocessing`` cannot do for a package's
``__main__`` module run with ``python -m``. Behaviour: see :func:`generate_labels`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from hiseg_ros.atomic import atomic_write_bytes, remove_stale_temporaries

SETTINGS_FILE = "pseudo_labels.json"
SKIPPED_FILE = "skipped.json"
CRASH_ENV = "HISEG_PSEUDO_CRASH_ON"  # test-only fault injection: a worker dies on this sample id

logger = logging.getLogger("training.labels.pseudo_labels")


def hierarchy_fingerprint(hierarchy: Any) -> str:
    """SHA-256 of the hierarchy's compact JSON: recorded with the labels, whose PNGs hold its class ids,
    so a training run can refuse labels made for another hierarchy
    (:mod:`training.labels.pseudo_labels.precomputed`)."""
    import hashlib

    return hashlib.sha256(hierarchy.to_json().encode()).hexdigest()


def split_ids(root: Path, split: str | None) -> set[str] | None:
    """Sample ids of a synthetic split (``synthetic.json`` ``split_members``), or None for all."""
    if split is None:
        return None
    meta = root / "synthetic.json"
    if not meta.is_file():
        raise ValueError(f"--split {split!r}: {meta} does not exist (only synthetic sets record their splits)")
    members = json.loads(meta.read_text()).get("split_members", {})
    if split not in members:
        raise ValueError(f"--split {split!r}: {meta} has splits {sorted(members)}")
    return set(members[split])


# --------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to rebuild the generator (picklable; models load inside the worker)."""

    dataset: str
    root: str
    hierarchy: str
    settings: dict[str, Any]
    out_dir: str
    threads: int = 1


_STATE: dict[str, Any] = {}


def _init_worker(spec: JobSpec) -> None:
    import cv2
    import torch

    from hiseg_ros.hierarchy import load_hierarchy
    from training.data.readers import load_dataset
    from training.labels.pseudo_labels.attention_decoder import load_decoder
    from training.labels.pseudo_labels.generator import GeneratorConfig, WeakLabelGenerator, load_tag_classifier
    from training.labels.pseudo_labels.saliency import make_saliency
    from training.labels.pseudo_labels.segmenter import Segmenter

    torch.set_num_threads(spec.threads)
    cv2.setNumThreads(spec.threads)
    config = GeneratorConfig.from_dict(spec.settings)
    hierarchy = load_hierarchy(spec.hierarchy)
    saliency = make_saliency(config.saliency_source, config.saliency_checkpoint) if config.saliency else None
    decoder = load_decoder(config.decoder_checkpoint) if config.decoder else None
    segmenter = Segmenter(config.segmenter_config, hierarchy) if config.segmenter else None
    _STATE.update(
        spec=spec,
        hierarchy=hierarchy,
        reader=load_dataset(spec.dataset, spec.root),
        generator=WeakLabelGenerator(
            hierarchy,
            load_tag_classifier(config, hierarchy, spec.dataset),
            saliency,
            config,
            decoder=decoder,
            segmenter=segmenter,
        ),
    )


def _run_one(index: int) -> tuple[str, str, str, dict[str, float]]:
    """(sample_id, "ok" | "skip", reason, stage seconds) for one image."""
    from training.data.readers.base import DatasetFormatError
    from training.labels.node_distribution import PseudoLabelError
    from training.labels.pseudo_labels.generator import encode_label, label_path

    spec: JobSpec = _STATE["spec"]
    gen = _STATE["generator"]
    reader = _STATE["reader"]
    sample_id = reader.sample_ids[index]
    if os.environ.get(CRASH_ENV) == sample_id:
        os._exit(3)
    gen.timings.clear()
    t0 = time.perf_counter()
    try:
        sample = reader[index]
    except DatasetFormatError as exc:
        return sample_id, "skip", f"unreadable image: {exc}", {}
    timings = {"load": time.perf_counter() - t0}
    if not sample.tags:
        return sample_id, "skip", "image has no tags", timings
    try:
        dist = gen(sample)
    except PseudoLabelError as exc:
        return sample_id, "skip", str(exc), {**timings, **gen.timings}
    if not dist.nodes:
        return sample_id, "skip", f"no tag of {list(sample.tags)} maps to a hierarchy class", {**timings, **gen.timings}
    t = time.perf_counter()
    atomic_write_bytes(
        label_path(Path(spec.out_dir), sample_id, gen.config.output),
        encode_label(dist, _STATE["hierarchy"], gen.config.output),
    )
    return sample_id, "ok", "", {**timings, **gen.timings, "write": time.perf_counter() - t}


# --------------------------------------------------------------------------- generate
def _reason_kind(reason: str) -> str:
    """Group skip reasons for the summary (drop the per-image details)."""
    if reason.startswith(("unreadable", "worker")):
        return reason.split(":")[0]
    if "unknown tag" in reason:
        return "tag unknown to the hierarchy"
    return reason.split(" (")[0]


@dataclass
class RunReport:
    done: int = 0
    already: int = 0
    skipped: dict[str, str] | None = None
    seconds: float = 0.0
    timings: dict[str, float] | None = None

    def summary(self) -> str:
        skipped = self.skipped or {}
        reasons = Counter(_reason_kind(r) for r in skipped.values())
        lines = [
            f"labelled {self.done} images in {self.seconds:.1f} s "
            f"({self.done / max(self.seconds, 1e-9):.2f} images/s), "
            f"{self.already} already done, {len(skipped)} without a label"
        ]
        lines += [f"  skipped {n}: {reason}" for reason, n in reasons.most_common()]
        if self.timings and self.done:
            total = sum(self.timings.values())
            lines.append(
                "  time per labelled image (worker seconds): "
                + ", ".join(
                    f"{k} {v / self.done * 1000:.0f} ms ({100 * v / total:.0f}%)"
                    for k, v in sorted(self.timings.items(), key=lambda kv: -kv[1])
                )
            )
        return "\n".join(lines)


def generate_labels(
    dataset: str,
    root: Path,
    hierarchy_path: Path,
    settings: dict[str, Any],
    out_dir: Path,
    workers: int = 2,
    ids: set[str] | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> RunReport:
    """Label every (selected) image of ``root`` into ``out_dir``; see the module docstring.

    ``limit``: only the first ``limit`` selected images (reader order), for trying settings quickly.
    """
    from tqdm import tqdm

    from hiseg_ros.hierarchy import load_hierarchy
    from training.data.readers import load_dataset
    from training.labels.pseudo_labels.generator import GeneratorConfig, label_path, load_tag_classifier

    config = GeneratorConfig.from_dict(settings)  # validate before any work
    for path, what in (
        (config.classifier, "classifier"),
        (config.saliency_checkpoint, "saliency.checkpoint"),
        (config.decoder_checkpoint, "decoder.checkpoint"),
        (config.segmenter_config.checkpoint if config.segmenter else None, "segmenter.checkpoint"),
        (config.classifier_hierarchy, "classifier_hierarchy"),
    ):
        if path and not Path(path).is_file():
            raise ValueError(f"{what}: {path} does not exist")
    hierarchy = load_hierarchy(hierarchy_path)
    load_tag_classifier(config, hierarchy, dataset)  # outputs vs hierarchy nodes: fail here, not in every worker
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": dataset,
        "root": str(root),
        "hierarchy": str(hierarchy_path),
        "hierarchy_name": hierarchy.name,
        "hierarchy_sha256": hierarchy_fingerprint(hierarchy),
        "generator": config.to_dict(),
    }
    settings_path = out_dir / SETTINGS_FILE
    if settings_path.is_file():
        previous = json.loads(settings_path.read_text())
        if previous.get("generator") != record["generator"] or previous.get("hierarchy") != record["hierarchy"]:
            raise ValueError(
                f"{settings_path}: labels in {out_dir} were made with different settings; use another --out "
                "(mixing two kinds of pseudo labels in one folder is refused)"
            )
    atomic_write_bytes(settings_path, (json.dumps(record, indent=2) + "\n").encode())
    remove_stale_temporaries(out_dir)  # left by an earlier run that was killed mid-write
    reader = load_dataset(dataset, root)
    todo, report = [], RunReport(skipped={}, timings=defaultdict(float))
    selected = 0
    for i, sample_id in enumerate(reader.sample_ids):
        if ids is not None and sample_id not in ids:
            continue
        if limit is not None and selected >= limit:
            break
        selected += 1
        if label_path(out_dir, sample_id, config.output).is_file():
            report.already += 1
        else:
            todo.append(i)
    spec = JobSpec(dataset, str(root), str(hierarchy_path), config.to_dict(), str(out_dir))
    start = time.perf_counter()
    bar = tqdm(total=len(todo), disable=not progress, unit="img", desc="pseudo labels")

    def collect(result: tuple[str, str, str, dict[str, float]]) -> None:
        sample_id, status, reason, timings = result
        for k, v in timings.items():
            report.timings[k] += v
        if status == "ok":
            report.done += 1
        else:
            report.skipped[sample_id] = reason
            logger.warning("skipped %s: %s", sample_id, reason)
        bar.update(1)

    if workers <= 1:
        _init_worker(spec)
        for i in todo:
            collect(_run_one(i))
    else:
        pending_ids = {i: reader.sample_ids[i] for i in todo}
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(spec,)
        ) as pool:
            futures = {pool.submit(_run_one, i): i for i in todo}
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = futures[fut]
                    try:
                        collect(fut.result())
                    except BrokenProcessPool:
                        collect((pending_ids[i], "skip", "worker crashed (process pool broken); rerun to resume", {}))
                    except Exception as exc:  # a bug or bad data inside a worker: report, keep going
                        collect((pending_ids[i], "skip", f"worker error: {type(exc).__name__}: {exc}", {}))
        # A crashed worker breaks the pool, which then terminates its siblings, possibly mid-write.
        remove_stale_temporaries(out_dir)
    bar.close()
    report.seconds = time.perf_counter() - start
    skipped_path = out_dir / SKIPPED_FILE
    atomic_write_bytes(skipped_path, (json.dumps(dict(sorted(report.skipped.items())), indent=2) + "\n").encode())
    return report
