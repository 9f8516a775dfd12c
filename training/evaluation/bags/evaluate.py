"""Evaluate a model on a rosbag2: offline (the engine on every frame) or live (through the running node).

    python -m training.evaluation.bags.evaluate BAG --model M.onnx --out DIR [--mode offline|live]
        [--rate-scale 1.0] [--dataset cityscapes] [--camera-topic /camera/image_raw]
        [--label-topic /camera/labels] [--sign-topic /camera/traffic_signs_gt] [--backend auto]
        [--params-file config/hiseg.yaml]
        [--node-arg=-p --node-arg=backend:=onnxruntime ...] [--frame-timeout 5] [--startup-timeout 120]
        [--samples 4] [--out-storage same|sqlite3|mcap] [--no-output-bag] [--overwrite] [--no-progress]

offline
    Runs ``hiseg_ros.engines`` directly on every camera frame, as fast as it can. The latency figures
    are the engine's inference time per frame; ``fps`` is frames per wall-clock second of the whole loop.
live
    Starts the node as a subprocess exactly as ``launch/hiseg.launch.py`` does
    (:mod:`training.evaluation.bags.node_process`: ``python -m hiseg_ros.node --ros-args --log-level
    info -r __node:=segmentation_node --params-file <params> -p model_path:=M -p use_compressed:=false
    -p use_sim_time:=false -r image:=<camera topic>``, with ``use_compressed:=true`` for a
    CompressedImage bag, then any ``--node-arg``), plays the bag
    into it over DDS with real rclpy publishing at the recorded rate times ``--rate-scale``, and
    collects every output topic. Each published frame is re-stamped with the current time
    (``time.time_ns()``, the clock the arrival times are taken with), so latency = arrival of the
    frame's LAST output - header stamp (``first_output_latency_ms``: its first output). A frame
    without any output within ``--frame-timeout`` seconds is *dropped*, one with only some outputs
    *partial*. DDS stays on loopback (``scripts/ros_env.sh`` is applied when the environment does
    not set it up already).

Metrics (``metrics.json``, read back with :meth:`training.evaluation.bags.result.BagResult.load`):
the :class:`training.evaluation.evaluate.EvaluationReport` of the frames with ground truth (the
label topic holds the ``--dataset``'s native label ids, e.g. Cityscapes labelIds), latency
p50 / p95 / p99, fps, achieved input rate, frame counts, and, when the bag has sign ground truth
(``--sign-topic``), the scores of the signs the node finds (offline: the node's
``hiseg_ros.outputs.find_signs``; live: its ``~/traffic_signs``) against it, per class and overall,
for all signs and those of at least 24 px (:mod:`~training.evaluation.bags.sign_scores`), with the
rule they were found by (``signs.rule``: ``sign_split`` and ``min_sign_area``; offline the options,
live the node's parameters as its command line sets them). Offline,
the per-classifier view uses the engine's raw decisions (identical to
``training.evaluation.evaluate``); live, it uses the node's ``~/<classifier>/mask`` where a pixel
not routed to the classifier (255) counts as a "no class" prediction (a false negative); the
per-dataset view is exact in both modes.

The modules: :mod:`~training.evaluation.bags.options` (the command line as frozen options),
:mod:`~training.evaluation.bags.offline`, :mod:`~training.evaluation.bags.live` (with
``live_startup`` and ``live_client``), :mod:`~training.evaluation.bags.output_bag`,
:mod:`~training.evaluation.bags.run` (counters, metrics, samples, the result),
:mod:`~training.evaluation.bags.sign_truth` / :mod:`~training.evaluation.bags.sign_scores` (the sign
ground truth and its scores) and :mod:`~training.evaluation.bags.result` (the typed ``metrics.json``).

Outputs in DIR: ``bag/`` (the input camera and label messages plus the outputs under
``/segmentation_node/...`` with the input frames' header stamps and bag times, so ``ros2 bag play``
+ RViz with config/hiseg.rviz shows the result), ``metrics.json``, ``report.html`` (PNGs embedded),
``report.md`` + PNGs, ``samples/`` and, live, ``node.log``. DIR is built in a hidden sibling folder
and renamed into place at the end; a run that stopped early or missed frames still writes DIR with
``"complete": false`` and the reason, and exits with 3. Memory stays flat: frames are streamed and
only per-frame latencies (8 bytes each) are kept.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hiseg_ros.atomic import atomic_folder

from .node_process import ensure_loopback_env
from .offline import run_offline
from .options import EvaluateOptions, parse_options
from .read import BagError, FrameReader
from .result import BagResult
from .run import RunState

EXIT_OK, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 3


def run_evaluation(opts: EvaluateOptions) -> tuple[int, BagResult]:
    """Evaluate as ``opts`` say; the result folder is built beside ``opts.out`` and renamed into place.

    Returns (exit code, result); raises (and writes nothing) when the bag or model cannot be opened.
    """
    if not opts.model.is_file():
        raise FileNotFoundError(f"--model {opts.model} does not exist")
    reader = FrameReader(
        opts.bag, opts.camera_topic, opts.label_topic, require_labels=opts.require_labels, sign_topic=opts.sign_topic
    )
    if opts.out.exists() and not opts.overwrite:
        raise FileExistsError(f"{opts.out} exists (use --overwrite to replace it)")
    info = reader.info
    with atomic_folder(opts.out) as folder:
        (folder / "samples").mkdir()
        state = RunState(
            opts.mode, info.path, opts.model, opts.dataset, info.frame_count, info.camera_topic, info.label_topic,
            folder,
        )  # fmt: skip
        state.sign_topic = info.sign_topic
        if info.label_topic is None:
            state.notes.append("the bag has no ground-truth topic: no segmentation metrics")
        if info.sign_topic is None:
            topic = opts.sign_topic or "no topic given"
            state.notes.append(f"the bag has no sign ground truth ({topic}): no sign scores")
        if opts.mode == "offline":
            result = run_offline(opts, reader, state)
        else:
            ensure_loopback_env()  # DDS on loopback before the live modules import rclpy
            from .live import LiveRun  # imported here: offline runs need no ROS installation

            result = LiveRun(opts, reader, state).run()
    return (EXIT_OK if result.complete else EXIT_INCOMPLETE), result


def evaluate_bag(argv: Sequence[str] | None = None) -> tuple[int, BagResult]:
    """The command without printing: (exit code, result)."""
    return run_evaluation(parse_options(argv))


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(argv)
    try:
        code, result = run_evaluation(opts)
    except (BagError, OSError, ValueError, KeyError, RuntimeError) as exc:  # nothing written
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    lat, fr = result.latency_ms, result.frames
    print("complete" if result.complete else f"INCOMPLETE: {result.reason}")
    print(
        f"{result.mode}: {fr.with_outputs}/{fr.in_bag} frames with outputs, {fr.dropped} dropped, "
        f"{result.latency_kind} p50/p95/p99 {lat.p50}/{lat.p95}/{lat.p99} ms, fps {result.fps}"
    )
    for name, score in result.dataset_scores().items():
        print(f"mIoU {name}: {score.miou}")
    for subset, sign in result.sign_scores().items():
        print(
            f"signs {subset}: {sign.truth} true, {sign.detections} detected, recall {sign.recall}, "
            f"precision {sign.precision}, class accuracy {sign.class_accuracy}"
        )
    print(f"report: {opts.out / 'report.html'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
