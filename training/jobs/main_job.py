"""The main job (README command 1): from nothing to a segmented drive with a report.

``bash scripts/demo.sh`` sets up the environment (scripts/setup_env.sh, the pinned venv), applies
scripts/ros_env.sh (DDS on loopback only) and runs this module, whose stages are:

1. synthetic datasets: the four real on-disk formats (Cityscapes, Mapillary Vistas, GTSDB,
   OpenScapes-style tags) under ``--data`` (``training.data.synthetic``; reused when its settings match);
2. read-back: every sample read with the project's readers and turned into targets of the default
   hierarchy, so a format or label-space mismatch fails here and not in training;
3. training: the default small model (config/training/demo.yaml: MobileNetV2 from the offline
   ImageNet weights) into ``OUT/train``; an interrupted run is resumed from its last checkpoint;
4. export: ``OUT/model.onnx`` with the in-graph decision rule (``training.export``);
5. drive: held-out synthetic Cityscapes-format scenes (``--drive-split``, default ``val``) resized
   to ``--drive-size`` and written as a rosbag2 (camera, ground-truth labels and traffic-sign boxes
   with their classes, from the ``_signs.json`` sidecars) ``OUT/drive``;
6. replay: the bag played LIVE through the node over DDS at the recorded rate
   (``training.evaluation.bags.evaluate --mode live``; ``--skip-live``: the engine offline instead), into
   ``OUT/live`` (or ``OUT/offline``): metrics.json, report.html, report.md, output bag;
7. report: where the report is and its headline numbers (per-classifier mIoU, Cityscapes mIoU,
   sign recall and class accuracy, latency p50 / p95, fps, dropped frames).

Every stage prints a numbered header and its duration. A stage whose outputs exist and were made
by this pipeline from the same inputs is reused: each writes ``OUT/stages/<stage>.json`` (a hash of
its settings and of the previous stages' outputs) last and atomically, so a stage that was
interrupted or made from other settings runs again. Any failure exits non-zero naming the stage;
a replay that lost frames is reported as INCOMPLETE (exit 3), never as a result.

    python -m training.jobs.main_job [--data DIR] [--preset small|large] [--out runs/demo] [--iterations N]
        [--config config/training/demo.yaml] [--drive-size 256 512] [--drive-split val]
        [--drive-limit N] [--rate 4] [--skip-live] [--until STAGE] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hiseg_ros.atomic import atomic_write_bytes
from hiseg_ros.engines.engine_cache import sha256_file
from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training import REPO
from training.data.readers import load_dataset
from training.data.synthetic import PRESETS, generate
from training.evaluation.bags.read import DEFAULT_SIGN_TOPIC
from training.evaluation.bags.result import BagResult
from training.evaluation.bags.sign_truth import scale_signs
from training.evaluation.bags.write import cityscapes_frames, write_bag
from training.evaluation.metrics import pct
from training.jobs.stages import IncompleteError, Pipeline, StageError, digest
from training.labels.targets import TargetBuilder

DEFAULT_HIERARCHY = REPO / "config" / "hierarchies" / "iv2018.yaml"
DEFAULT_CONFIG = REPO / "config" / "training" / "demo.yaml"
DATASET_NAMES = ("cityscapes", "vistas", "gtsdb", "openscapes")
STAGES = ("data", "readback", "train", "export", "drive", "replay", "report")
TITLES = {
    "data": "synthetic datasets",
    "readback": "reading every sample back and building targets",
    "train": "training the default small model",
    "export": "exporting to ONNX",
    "drive": "rendering a synthetic drive into a bag",
    "replay": "replaying the drive and evaluating",
    "report": "report",
}
DRIVE_START_NS = 1_700_000_000_000_000_000  # fixed bag stamps: the same settings give the same bag
# The node's input subscription for the replay: reliable with a short queue, so a frame that arrives
# while the previous one is being segmented waits instead of replacing it (config/hiseg.yaml's
# best-effort keep-last-1 is right for a camera, but it loses frames when a loaded machine stalls).
NODE_ARGS = ("-p", "input_qos.reliability:=reliable", "-p", "input_qos.depth:=10")
EXIT_FAILED, EXIT_INCOMPLETE = 1, 3

# (dataset, reader arguments) of every split the generator writes.
READ_BACK = (
    ("cityscapes", {"split": "train"}),
    ("cityscapes", {"split": "val"}),
    ("vistas", {"split": "training"}),
    ("vistas", {"split": "validation"}),
    ("gtsdb", {}),
    ("openscapes", {}),
)


@dataclass(frozen=True)
class ReadBack:
    """What reading one dataset split back gave."""

    dataset: str
    split: str
    samples: int
    labelled_pixels: int  # pixels with a root target (per-pixel sets) or a weak target (others)
    boxes: int
    tags: int
    seconds: float

    def format(self) -> str:
        return (
            f"  {self.dataset:<11} {self.split or 'all':<11} {self.samples:>5} samples  "
            f"{self.labelled_pixels:>11,} supervised px  {self.boxes:>4} boxes  {self.tags:>4} tags  "
            f"{self.seconds:5.1f} s"
        )


def read_back(data_root: Path, hierarchy: Hierarchy) -> list[ReadBack]:
    """Read every sample with the readers and build its targets; raises on the first bad file."""
    builder = TargetBuilder(hierarchy)
    results = []
    for name, kwargs in READ_BACK:
        start = time.perf_counter()
        reader = load_dataset(name, data_root / name, **kwargs)
        supervised = boxes = tags = 0
        for sample in reader:
            targets = builder(sample)
            supervised += sum(int((t != 255).sum()) for t in targets.hard.values())
            supervised += sum(int(s.valid.sum()) for s in targets.soft.values())
            boxes += len(sample.boxes)
            tags += len(sample.tags)
        results.append(
            ReadBack(name, kwargs.get("split", ""), len(reader), supervised, boxes, tags, time.perf_counter() - start)
        )
    return results


# ---------------------------------------------------------------------------- stages
def data_settings(data: Path) -> dict[str, Any]:
    """The generator settings of every dataset (its synthetic.json), the data part of later keys."""
    out = {}
    for name in DATASET_NAMES:
        path = data / name / "synthetic.json"
        try:
            out[name] = json.loads(path.read_text())["settings"]
        except (OSError, ValueError, KeyError) as exc:
            raise StageError(f"{path}: no generator settings ({exc})") from exc
    return out


def stage_data(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    progress = args.preset != "small" and not args.no_progress  # the small preset takes seconds
    summary = generate(args.data, args.preset, args.seed, args.workers, progress=progress)
    print(summary.format())
    return data_settings(args.data), all(d.skipped for d in summary.datasets.values())


def stage_readback(p: Pipeline, args: argparse.Namespace, hierarchy: Hierarchy, data_key: str):
    key = digest(data_key, hierarchy.to_json())
    if (m := p.reusable("readback", key)) is not None:
        for line in m["lines"]:
            print(line)
        return key, True
    lines = [r.format() for r in read_back(args.data, hierarchy)]
    for line in lines:
        print(line)
    p.complete("readback", key, lines=lines)
    return key, False


def load_demo_config(args: argparse.Namespace):
    from training.fit.config import load_config

    config, hierarchy = load_config(args.config, check_data=False)
    changes: dict[str, Any] = {"run": {"out_dir": str(args.out / "train")}}
    if args.iterations is not None:
        changes["schedule"] = {"iterations": args.iterations}
    config = config.with_overrides(**changes)
    return dataclasses.replace(config, data_root=str(args.data.resolve())), hierarchy


def stage_train(p: Pipeline, args: argparse.Namespace, config, hierarchy: Hierarchy, data: dict[str, Any]):
    from training.fit.checkpoints import LAST
    from training.fit.train import train

    out_dir = Path(config.run.out_dir)
    settings = config.to_dict()
    for k in ("out_dir", "num_workers", "log_every"):  # do not change the weights
        settings["run"].pop(k)
    settings.pop("data_root")
    key = digest(settings, hierarchy.to_json(), data)
    ckpt = out_dir / LAST
    if (m := p.reusable("train", key, (ckpt,))) is not None and sha256_file(ckpt) == m["checkpoint_sha256"]:
        print(f"  reusing {ckpt} ({m['iterations']} iterations, final loss {m['final_loss']})")
        return ckpt, key, m["checkpoint_sha256"], True
    p.invalidate("train")
    pending = out_dir / "demo_pending.json"
    resume = False
    with contextlib.suppress(OSError, ValueError):
        resume = json.loads(pending.read_text()).get("key") == key and ckpt.is_file()
    if not resume and out_dir.exists():
        if any(out_dir.iterdir()) and not (out_dir / "config.yaml").is_file():
            raise StageError(f"{out_dir} exists and is not a training folder of this pipeline; remove it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(pending, json.dumps({"key": key}).encode())
    total = config.schedule.iterations
    print(
        f"  {config.model.backbone} (pretrained: {config.model.pretrained}), crops {list(config.augment.crop)}, "
        f"{total} iterations, batch {sum(d.per_batch for d in config.datasets)}"
        + (f", resuming from {ckpt}" if resume else ""),
        flush=True,
    )
    result = train(config, hierarchy, resume=True if resume else None, progress=not args.no_progress)
    if result.iteration != total or result.checkpoint is None or not ckpt.is_file():
        raise StageError(f"training stopped at iteration {result.iteration} of {total}")
    losses = result.losses[-10:]
    final = round(sum(x["loss"] for x in losses) / len(losses), 4) if losses else None
    sha = sha256_file(ckpt)
    p.complete("train", key, iterations=total, checkpoint=str(ckpt), checkpoint_sha256=sha, final_loss=final)
    pending.unlink(missing_ok=True)
    print(f"  checkpoint {ckpt} (mean loss of the last {len(losses)} iterations {final})")
    return ckpt, key, sha, False


def stage_export(p: Pipeline, args: argparse.Namespace, ckpt: Path, ckpt_sha: str, hierarchy: Hierarchy):
    from training.export import export_checkpoint

    model = args.out / "model.onnx"
    key = digest(ckpt_sha, hierarchy.to_json())
    if (m := p.reusable("export", key, (model,))) is not None and sha256_file(model) == m["model_sha256"]:
        print(f"  reusing {model}")
        return model, m["model_sha256"], True
    p.invalidate("export")
    export_checkpoint(ckpt, model, hierarchy)
    sha = sha256_file(model)
    p.complete("export", key, model=str(model), model_sha256=sha, checkpoint=str(ckpt))
    print(f"  {model} ({model.stat().st_size / 1e6:.1f} MB), checked against PyTorch in ONNX Runtime")
    return model, sha, False


def drive_frames(
    root: Path, split: str, size: tuple[int, int], limit: int | None, hierarchy: Hierarchy
) -> tuple[int, Iterator]:
    """(count, generator of (rgb, labelIds, signs or None)) of a Cityscapes-format split resized to
    ``size`` (H, W); the sign boxes scaled with the image, named through ``hierarchy``."""
    import cv2

    count, frames = cityscapes_frames(root, split, limit=limit, hierarchy=hierarchy)
    h, w = size

    def gen():
        for rgb, label, signs in frames:
            if rgb.shape[:2] != (h, w):
                if signs is not None:
                    signs = scale_signs(signs, rgb.shape[:2], (h, w))
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
                label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
            yield rgb, label, signs

    return count, gen()


def stage_drive(p: Pipeline, args: argparse.Namespace, data: dict[str, Any], hierarchy: Hierarchy):
    bag = args.out / "drive"
    settings = {
        "cityscapes": data["cityscapes"],
        "split": args.drive_split,
        "size": list(args.drive_size),
        "limit": args.drive_limit,
        "rate": args.rate,
        "start_ns": DRIVE_START_NS,
        "sign_topic": DEFAULT_SIGN_TOPIC,
        "sign_names": hierarchy.name,
    }
    key = digest(settings)
    if (m := p.reusable("drive", key, (bag,))) is not None:
        print(f"  reusing {bag}: {m['frames']} frames {m['width']}x{m['height']} at {m['rate_hz']:g} Hz")
        return bag, key, True
    p.invalidate("drive")
    size = tuple(args.drive_size)
    count, frames = drive_frames(args.data / "cityscapes", args.drive_split, size, args.drive_limit, hierarchy)
    if count == 0:
        raise StageError(f"{args.data / 'cityscapes'}: split {args.drive_split!r} has no scenes")
    summary = write_bag(
        bag, frames, rate_hz=args.rate, start_ns=DRIVE_START_NS, overwrite=True, total=count,
        progress=not args.no_progress,
    )  # fmt: skip
    if summary.frames != count:
        raise StageError(f"wrote {summary.frames} of {count} frames")
    info = {"frames": summary.frames, "width": summary.width, "height": summary.height, "rate_hz": args.rate}
    p.complete("drive", key, bag=str(bag), sign_frames=summary.sign_frames, **info)
    signs = f", sign ground truth on {summary.sign_frames}" if summary.sign_topic else ", no sign ground truth"
    print(
        f"  {bag}: {summary.frames} frames {summary.width}x{summary.height} at {args.rate:g} Hz "
        f"({args.drive_split}){signs}"
    )
    return bag, key, False


def stage_replay(p: Pipeline, args: argparse.Namespace, model: Path, model_sha: str, bag: Path, bag_key: str):
    mode = "offline" if args.skip_live else "live"
    result = args.out / mode
    cmd = [
        sys.executable,
        "-m",
        "training.evaluation.bags.evaluate",
        str(bag),
        "--model",
        str(model),
        "--out",
        str(result),
    ]
    cmd += ["--mode", mode, "--dataset", "cityscapes", "--require-labels", "--overwrite"]
    if mode == "live":
        cmd += ["--rate-scale", "1.0", "--frame-timeout", str(args.frame_timeout), "--startup-timeout", "180"]
        cmd += [f"--node-arg={a}" for a in NODE_ARGS]
    if args.no_progress:
        cmd.append("--no-progress")
    key = digest(model_sha, bag_key, cmd[4:])
    metrics_path = result / "metrics.json"
    if p.reusable(f"replay_{mode}", key, (metrics_path, result / "report.html")) is not None:
        metrics = BagResult.load(metrics_path)
        if metrics.complete:
            print(f"  reusing {result}")
            return result, metrics, True
    p.invalidate(f"replay_{mode}")
    print("  " + " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=REPO, check=False)
    if done.returncode not in (0, EXIT_INCOMPLETE) or not metrics_path.is_file():
        raise StageError(f"training.evaluation.bags.evaluate exited with {done.returncode} (see the messages above)")
    metrics = BagResult.load(metrics_path)
    if done.returncode != 0 or not metrics.complete:
        raise IncompleteError(f"{result}: the replay is INCOMPLETE: {metrics.reason}")
    p.complete(f"replay_{mode}", key, result=str(result), command=cmd[1:])
    return result, metrics, False


def _miou(value: float | None) -> str:
    return pct(value, 1, "n/a", " %")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def headline(result: BagResult) -> list[str]:
    """The report's headline numbers as printed lines."""
    lines = []
    classifiers = result.classifier_scores()
    if classifiers:
        per = ", ".join(f"{k} {_miou(v.miou)}" for k, v in classifiers.items())
        lines.append(f"  mIoU per classifier: {per}")
    for name, ds in result.dataset_scores().items():
        lines.append(f"  {name} mIoU: {_miou(ds.miou)} ({ds.num_samples} frames)")
    for subset, sign in result.sign_scores().items():
        lines.append(
            f"  signs ({subset}): recall {_miou(sign.recall)}, class accuracy {_miou(sign.class_accuracy)}, "
            f"precision {_miou(sign.precision)} ({sign.truth} true, {sign.detections} detected)"
        )
    lat, fr = result.latency_ms, result.frames
    lines.append(f"  {result.latency_kind}: p50 {_ms(lat.p50)}, p95 {_ms(lat.p95)}")
    fps, rate = result.fps, result.recorded_rate_hz
    lines.append(
        f"  fps {'n/a' if fps is None else f'{fps:.2f}'}"
        + (f" (bag recorded at {rate:g} Hz)" if rate else "")
        + f"; frames {fr.with_outputs}/{fr.in_bag} with outputs, "
        f"{fr.dropped} dropped, {fr.partial} partial"
    )
    return lines


# ---------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.jobs.main_job", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "synthetic", help="where the datasets go")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="large", help="synthetic preset (small: seconds)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    ap.add_argument("--workers", type=int, default=2, help="data generation processes")
    ap.add_argument("--hierarchy", type=Path, default=DEFAULT_HIERARCHY, help="(read-back without a config)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="training, model, bag and report")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (data_root: --data)")
    ap.add_argument("--iterations", type=int, help="training iterations (overrides the config)")
    ap.add_argument("--drive-split", default="val", help="Cityscapes-format split rendered as the drive")
    ap.add_argument("--drive-size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--drive-limit", type=int, help="at most this many frames in the drive")
    ap.add_argument("--rate", type=float, default=4.0, help="drive frame rate (Hz), replayed at this rate")
    ap.add_argument("--frame-timeout", type=float, default=15.0, help="live: seconds to wait for a frame's outputs")
    ap.add_argument("--skip-live", action="store_true", help="evaluate the bag offline (engine) instead of the node")
    ap.add_argument("--until", choices=STAGES[:-1], help="stop after this stage")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.iterations is not None and args.iterations <= 0:
        print(f"error: --iterations must be positive, got {args.iterations}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.data, args.out = args.data.resolve(), args.out.resolve()
    stages = STAGES if args.until is None else STAGES[: STAGES.index(args.until) + 1]
    p = Pipeline(args.out, stages, TITLES)
    start = time.perf_counter()
    try:
        code = _run(p, args)
    except StageError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; an interrupted training resumes next time", file=sys.stderr)
        return 130
    except IncompleteError as exc:
        print(f"\nINCOMPLETE: {exc}", file=sys.stderr)
        print("the numbers in that report are NOT a complete result (see its reason)", file=sys.stderr)
        return EXIT_INCOMPLETE
    total = time.perf_counter() - start
    parts = ", ".join(f"{s} {d:.0f} s{' (reused)' if r else ''}" for s, (d, r) in p.durations.items())
    print(f"\ntotal {total:.0f} s: {parts}")
    return code


def _run(p: Pipeline, args: argparse.Namespace) -> int:
    if args.until in ("data", "readback"):  # the datasets only: no training config needed
        hierarchy, config = load_hierarchy(args.hierarchy), None
    else:
        try:
            config, hierarchy = load_demo_config(args)
        except Exception as exc:
            raise StageError(f"{args.config}: {exc}") from exc
    data = p.run("data", lambda: stage_data(args), f"({args.preset} preset) -> {args.data}")
    data_key = digest(data)
    p.run("readback", lambda: stage_readback(p, args, hierarchy, data_key), f"({hierarchy.name})")
    if args.until in ("data", "readback"):
        print(f"done: datasets in {args.data}")
        return 0
    ckpt, _, ckpt_sha = p.run("train", lambda: _split(stage_train(p, args, config, hierarchy, data)))
    if args.until == "train":
        return 0
    model, model_sha = p.run("export", lambda: _split(stage_export(p, args, ckpt, ckpt_sha, hierarchy)))
    if args.until == "export":
        return 0
    bag, bag_key = p.run("drive", lambda: _split(stage_drive(p, args, data, hierarchy)))
    if args.until == "drive":
        return 0
    mode = "(offline: the engine, --skip-live)" if args.skip_live else "(live: through the node over DDS)"
    result, metrics = p.run("replay", lambda: _split(stage_replay(p, args, model, model_sha, bag, bag_key)), mode)
    if args.until == "replay":
        return 0

    def report() -> tuple[None, bool]:
        print(f"  report:  {result / 'report.html'}  (also report.md, metrics.json, output bag {result / 'bag'})")
        print(f"  model:   {model}")
        print(f"  drive:   {bag}")
        for line in headline(metrics):
            print(line)
        return None, False

    p.run("report", report)
    return 0


def _split(result: tuple) -> tuple[Any, bool]:
    """(a, b, ..., reused) -> ((a, b, ...), reused)."""
    *values, reused = result
    return (values[0] if len(values) == 1 else tuple(values)), reused


if __name__ == "__main__":
    sys.exit(main())
