"""Generate the four synthetic datasets: presets, per-image seeds, atomic dataset folders, summary.

Each image is rendered from a seed derived from (seed, dataset, index) only, so the
output does not depend on the number of workers or on which datasets are selected.
A dataset is built in a hidden sibling folder and renamed into place only once all its
files (and last its synthetic.json) are written: a folder with that name and a
synthetic.json is therefore always complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from training.data.readers.gtsdb import split_number
from training.data.readers.label_tables import GTSDB_CLASSES, VISTAS_V12_LABELS

from .domains import DOMAINS, DomainStyle
from .files import atomic_write_json
from .scene import Scene, render_scene
from .writers import WRITERS, ImageRecord

GENERATOR = "hiseg_ros training.data.synthetic"
GENERATOR_VERSION = 3  # bump whenever the rendered content changes (2: GTSDB test images numbered from 600;
# 3: GTSDB sign boxes sized like the real set's, classes uniform, 1360x800 in `large`)
DATASETS: tuple[str, ...] = ("cityscapes", "vistas", "gtsdb", "openscapes")
META_FILE = "synthetic.json"
_READABLE = {lab.name: lab.readable for lab in VISTAS_V12_LABELS}


@dataclass(frozen=True)
class DatasetPreset:
    splits: tuple[tuple[str, int], ...]
    size: tuple[int, int]  # (height, width); datasets with varied sizes use its area
    varied: bool = False  # per-image aspect and scale, like Vistas / Open Images photos
    signs_per_image: float | None = None  # domains with sized sign boxes (GTSDB): fronts placed per image


@dataclass(frozen=True)
class Preset:
    name: str
    datasets: dict[str, DatasetPreset]


PRESETS: dict[str, Preset] = {
    "small": Preset("small", {
        "cityscapes": DatasetPreset((("train", 6), ("val", 3)), (128, 256)),
        "vistas": DatasetPreset((("training", 6), ("validation", 3)), (168, 224), varied=True),
        "gtsdb": DatasetPreset((("train", 6), ("test", 3)), (160, 272), signs_per_image=8),
        "openscapes": DatasetPreset((("train", 6), ("validation", 3)), (180, 240), varied=True),
    }),
    "large": Preset("large", {
        # 180 val scenes: the main job's drive replays all of them; 60 held only 7 signs of >= 24 px at the
        # drive's 256x512, too few to tell a sign recall or class accuracy from chance (180: 36).
        "cityscapes": DatasetPreset((("train", 240), ("val", 180)), (512, 1024)),
        "vistas": DatasetPreset((("training", 240), ("validation", 60)), (576, 864), varied=True),
        # The benchmark's image size; 600 train images is all its numbering holds (gtsdb.SPLITS).
        "gtsdb": DatasetPreset((("train", 600), ("test", 60)), (800, 1360), signs_per_image=24),
        "openscapes": DatasetPreset((("train", 240), ("validation", 60)), (480, 640), varied=True),
    }),
}  # fmt: skip


@dataclass(frozen=True)
class ImageTask:
    dataset: str
    split: str
    index: int  # within the split (GTSDB: the file number, by the benchmark's split numbering)
    ordinal: int  # within the dataset: the seed index
    seed: int
    height: int
    width: int
    root: str
    signs_per_image: float | None = None  # the preset's, for the domain (None: the domain's own)
    absent_vehicles: float = 0.0  # opt-in, tag set only: DomainStyle.absent_vehicles


TAG_SET = "openscapes"  # the dataset ``absent_vehicles`` applies to


def check_absent_vehicles(share: float, names: Sequence[str]) -> None:
    """``absent_vehicles`` must be a probability, and is for the tag set only (its tags then vary)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"absent_vehicles: expected a probability in [0, 1], got {share}")
    if share > 0 and TAG_SET not in names:
        raise ValueError(f"absent_vehicles applies to the {TAG_SET} tag set only; it is not among {list(names)}")


def image_seed(seed: int, dataset: str, ordinal: int) -> int:
    """Per-image seed from (seed, dataset, ordinal) only."""
    state = np.random.SeedSequence([int(seed), zlib.crc32(dataset.encode()), int(ordinal)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def image_size(preset: DatasetPreset, dataset: str, seed: int, scale: float = 1.0) -> tuple[int, int]:
    """(height, width) of one image: fixed, or (Vistas / Open Images) a random aspect and scale."""
    h, w = preset.size
    if not preset.varied:
        return max(8, round(h * scale)), max(8, round(w * scale))
    rng = np.random.default_rng([seed, 1])
    aspect = float(rng.choice(DOMAINS[dataset].aspects))
    area = h * w * (scale * rng.uniform(0.8, 1.25)) ** 2
    width = round(math.sqrt(area * aspect))
    return max(8, round(width / aspect)), max(8, width)


def plan_tasks(
    dataset: str, preset: Preset | str, seed: int, scale: float = 1.0, root: str = "", absent_vehicles: float = 0.0
) -> list[ImageTask]:
    """One task per image of the preset's splits; ``absent_vehicles`` is used for the tag set only."""
    p = (PRESETS[preset] if isinstance(preset, str) else preset).datasets[dataset]
    absent = absent_vehicles if dataset == TAG_SET else 0.0
    tasks, ordinal = [], 0
    for split, count in p.splits:
        for index in range(count):
            s = image_seed(seed, dataset, ordinal)
            h, w = image_size(p, dataset, s, scale)
            number = split_number(split, index) if dataset == "gtsdb" else index
            tasks.append(ImageTask(dataset, split, number, ordinal, s, h, w, root, p.signs_per_image, absent))
            ordinal += 1
    return tasks


def iter_scenes(
    dataset: str,
    preset: Preset | str = "small",
    seed: int = 0,
    scale: float = 1.0,
    split: str | None = None,
    absent_vehicles: float = 0.0,
) -> Iterator[tuple[ImageTask, Scene]]:
    """Re-render exactly the scenes a generation writes (for tests, demos and evaluation); ``split``:
    only that split's, without rendering the others."""
    for task in plan_tasks(dataset, preset, seed, scale, absent_vehicles=absent_vehicles):
        if split is None or task.split == split:
            yield task, render_scene(task.height, task.width, task.seed, task_style(task))


def task_style(task: ImageTask) -> DomainStyle:
    """The domain a task renders in, with its preset's sign count where it sets one and the opt-in
    share of images without each vehicle kind."""
    style = DOMAINS[task.dataset]
    if task.absent_vehicles > 0:
        style = replace(style, absent_vehicles=float(task.absent_vehicles))
    if task.signs_per_image is None or style.sign_boxes is None:
        return style
    return replace(style, signs_per_image=float(task.signs_per_image))


def run_task(task: ImageTask) -> ImageRecord:
    """Render one image and write its files (runs in worker processes)."""
    scene = render_scene(task.height, task.width, task.seed, task_style(task))
    return WRITERS[task.dataset].image(Path(task.root), task.split, task.index, scene)


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


# -- summary --------------------------------------------------------------------------------
@dataclass
class DatasetSummary:
    name: str
    root: str
    skipped: bool
    seconds: float
    splits: dict[str, int]
    resolutions: dict[str, int]  # "WxH" -> images
    class_pixels: dict[str, int]  # Vistas label name -> pixels over all images
    sign_counts: dict[str, int] = field(default_factory=dict)  # GTSDB class id -> boxes
    sign_sizes: dict[str, int] = field(default_factory=dict)  # GTSDB box longer side: p10, median, min, max
    images_without_signs: int = 0
    tag_counts: dict[str, int] = field(default_factory=dict)  # OpenScapes positives

    @classmethod
    def from_records(cls, name: str, root: Path, records: Sequence[ImageRecord], seconds: float) -> DatasetSummary:
        pixels = np.sum([r.label_pixels for r in records], axis=0) if records else np.zeros(len(VISTAS_V12_LABELS))
        signs = Counter(c for r in records for c in r.sign_classes)
        sizes = np.array([s for r in records for s in r.sign_sizes])
        return cls(
            name=name,
            root=str(root),
            skipped=False,
            seconds=round(seconds, 3),
            splits=dict(Counter(r.split for r in records)),
            resolutions=dict(Counter(f"{r.width}x{r.height}" for r in records).most_common()),
            class_pixels={VISTAS_V12_LABELS[i].name: int(n) for i, n in enumerate(pixels) if n},
            sign_counts={str(k): v for k, v in sorted(signs.items())} if name == "gtsdb" else {},
            sign_sizes=_size_stats(sizes) if name == "gtsdb" else {},
            images_without_signs=sum(1 for r in records if not r.gt_lines) if name == "gtsdb" else 0,
            tag_counts=dict(Counter(t for r in records for t in r.tags).most_common()),
        )

    def format(self) -> str:
        state = "skipped (complete, same settings)" if self.skipped else f"generated in {self.seconds:.1f} s"
        lines = [f"{self.name:<11} {state}  ->  {self.root}"]
        lines.append("  images      " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        res = list(self.resolutions.items())
        shown = ", ".join(f"{k} ({v})" for k, v in res[:6]) + (f", ... {len(res) - 6} more" if len(res) > 6 else "")
        lines.append(f"  resolution  {shown}")
        total = sum(self.class_pixels.values()) or 1
        top = sorted(self.class_pixels.items(), key=lambda kv: -kv[1])[:12]
        lines.append("  pixels      " + ", ".join(f"{_READABLE[k]} {100 * v / total:.1f}%" for k, v in top))
        if self.name == "gtsdb":
            n = sum(self.sign_counts.values())
            lines.append(f"  signs       {n} boxes, {self.images_without_signs} images without signs")
            if self.sign_sizes:
                z = self.sign_sizes
                lines.append(f"  box sizes   median {z['median']} px, p10 {z['p10']} px, "
                             f"min {z['min']}, max {z['max']} (longer side)")  # fmt: skip
            items = [f"{k} {GTSDB_CLASSES[int(k)]}: {v}" for k, v in self.sign_counts.items()]
            for i in range(0, len(items), 4):
                lines.append("              " + ", ".join(items[i : i + 4]))
        if self.tag_counts:
            lines.append("  tags        " + ", ".join(f"{k} {v}" for k, v in self.tag_counts.items()))
        return "\n".join(lines)


def _size_stats(sizes: np.ndarray) -> dict[str, int]:
    if sizes.size == 0:
        return {}
    p10, median = np.percentile(sizes, [10, 50])
    return {"p10": round(float(p10)), "median": round(float(median)), "min": int(sizes.min()), "max": int(sizes.max())}


@dataclass
class GenerationSummary:
    out_dir: str
    preset: str
    seed: int
    seconds: float
    datasets: dict[str, DatasetSummary]

    def format(self) -> str:
        head = f"Synthetic datasets in {self.out_dir} (preset {self.preset}, seed {self.seed}, {self.seconds:.1f} s)"
        return "\n".join([head, *(d.format() for d in self.datasets.values())])


# -- atomic dataset folders -----------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out_dir: Path, name: str) -> None:
    """Delete hidden leftovers of interrupted runs whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(partial|old)-(\d+)-")
    for p in out_dir.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def read_meta(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def _settings(name: str, preset: Preset, seed: int, scale: float, absent_vehicles: float = 0.0) -> dict:
    """The fingerprint of a dataset folder; ``absent_vehicles`` appears only when set, so the default
    folders (and their synthetic.json) are exactly as before the option existed."""
    p = preset.datasets[name]
    extra = {"absent_vehicles": float(absent_vehicles)} if absent_vehicles > 0 and name == TAG_SET else {}
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "dataset": name,
        "preset": preset.name,
        "seed": int(seed),
        "scale": float(scale),
        "splits": {s: n for s, n in p.splits},
        "size": list(p.size),
        "varied_size": p.varied,
        "signs_per_image": p.signs_per_image,
        **extra,
    }


def _build(
    name: str, out_dir: Path, preset: Preset, seed: int, scale: float, pool, progress, absent_vehicles: float = 0.0
) -> DatasetSummary:
    final = out_dir / name
    settings = _settings(name, preset, seed, scale, absent_vehicles)
    meta = read_meta(final)
    if meta is not None and meta.get("settings") == settings:
        s = DatasetSummary(**meta["summary"])
        s.skipped, s.root = True, str(final)
        return s
    if final.exists() and (meta is None or meta.get("settings", {}).get("generator") != GENERATOR):
        raise FileExistsError(f"{final} exists and was not written by this generator; refusing to replace it")
    _remove_stale(out_dir, name)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=out_dir))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        tasks = plan_tasks(name, preset, seed, scale, str(tmp), absent_vehicles)
        results = pool.imap(run_task, tasks, chunksize=2) if pool is not None else map(run_task, tasks)
        records = []
        for rec in results:
            records.append(rec)
            if progress is not None:
                progress.update(1)
        WRITERS[name].finish(tmp, records)
        summary = DatasetSummary.from_records(name, final, records, time.perf_counter() - start)
        split_members: dict[str, list[str]] = {}
        for r in records:
            split_members.setdefault(r.split, []).append(r.name)
        atomic_write_json(tmp / META_FILE, {"settings": settings, "summary": asdict(summary),
                                            "split_members": split_members})  # fmt: skip
        old = None
        if final.exists():
            old = out_dir / f".{name}.old-{os.getpid()}-{time.monotonic_ns()}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return summary
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def generate(
    out_dir: str | Path,
    preset: str | Preset = "small",
    seed: int = 0,
    workers: int = 1,
    only: Sequence[str] | None = None,
    scale: float = 1.0,
    progress: bool = False,
    absent_vehicles: float = 0.0,
) -> GenerationSummary:
    """Write DIR/cityscapes, DIR/vistas, DIR/gtsdb, DIR/openscapes (or `only` some) and summarise them.

    ``absent_vehicles`` (opt-in, the tag set only): each of car / truck / bus is left out of an
    OpenScapes image with this probability (:func:`~.population.left_out_vehicles`).
    """
    preset_obj = PRESETS[preset] if isinstance(preset, str) else preset
    names = list(only) if only else list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; choose from {', '.join(DATASETS)}")
    check_absent_vehicles(absent_vehicles, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(n for name in names for _, n in preset_obj.datasets[name].splits)
        bar = tqdm(total=total, unit="img", desc="synthetic")
    pool = None
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init)
    try:
        summaries = {}
        for name in names:
            if bar is not None:
                bar.set_description(name)
            summaries[name] = _build(name, out, preset_obj, seed, scale, pool, bar, absent_vehicles)
            if bar is not None and summaries[name].skipped:
                bar.update(sum(summaries[name].splits.values()))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    return GenerationSummary(str(out), preset_obj.name, int(seed), round(time.perf_counter() - start, 3), summaries)
