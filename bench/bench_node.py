"""Node end-to-end latency vs engine-only latency (per output), and a 60 s soak at 2x the inference rate.

Source ``scripts/ros_env.sh`` first (DDS on loopback only, own domain id). The model is the
random-init IV 2018 MobileNetV2 network exported by ``python -m training.export`` (weights do not
change the cost), or ``--model``. The node runs in its own process, started as
launch/hiseg.launch.py starts it (``training.evaluation.bags.node_process``: ``python -m
hiseg_ros.node`` with config/hiseg.yaml), then backend onnxruntime with its default threads,
resize policy none, ``input_qos.reliability`` from ``--input-reliability``, default the node's own
best_effort, ``cpu_spin_wait`` from ``--cpu-spin-wait``, default off like the node; this process
publishes ``rgb8`` images (``--height`` x ``--width``, a synthetic street) and subscribes to the outputs.
With ``--client serialized`` (default) it publishes the image already serialized (re-stamped before
the clock starts) and takes the outputs serialized (``raw=True``), reading only their header stamps,
so that rclpy's message conversions in this process are not counted as the node's cost;
``--client messages`` uses Python messages both ways, as a Python subscriber would.

1. engine only: ``create_engine(model, backend="onnxruntime").infer`` in this process, with the
   node's engine options, median of ``--repeats`` (the node is not running).
2. end to end, one output kind at a time (the node's ``outputs`` parameter) and all together:
   one frame at a time, latency = publish call here -> the last output message of that frame
   received here (DDS transport both ways, conversion, inference, outputs, serialisation);
   median of ``--repeats`` frames. Right before each frame the engine of step 1 runs once here
   while the node is idle ("engine alone, same frames"); node overhead = median over the frames of
   (end-to-end - engine alone), so that slow drift of the machine cancels. The node's own
   ``inference_p50_ms`` (from /diagnostics) is reported next to it, and its ``latency_p50_ms``
   (message arrival -> the last output published, in the node): their difference is the node's own
   work beyond inference (hand-off to the worker, conversion, outputs, publishing), end-to-end minus
   that latency is DDS both ways (the camera image in, the outputs out, and their dispatch).
3. in-process breakdown: the cost of each output step (``hiseg_ros.outputs`` + message building)
   on the engine's decisions for the same image, medians, without DDS.
4. soak: all outputs, images at twice the node's inference rate (1 / its inference p50) for
   ``--soak-seconds``; latency of every processed frame (publish -> ``~/overlay``, the last output
   the node publishes) per 10 s window (p50 / p95 / max), frames dropped by the latest-frame-only
   policy, and the node's VmRSS (``/proc/<pid>/status``) sampled every second (first / last / max).

The 1-minute load average is printed with every figure: the machine may be shared.

    source scripts/ros_env.sh && python bench/bench_node.py [--repeats 10 --soak-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the source tree

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from bench.bench_decisions import synthetic_street
from hiseg_ros import outputs
from hiseg_ros.imaging import image_to_rgb, mono8_msg, mono16_msg, rgb8_msg
from hiseg_ros.memory import retain_freed_memory
from hiseg_ros.messages import NODE_NAME, NS_PER_S, set_stamp, stamp_ns
from training import REPO
from training.evaluation.bags.node_process import NodeProcess, launch_ros_args
from training.evaluation.bags.output_bag import cdr_stamp, restamp_cdr
from training.evaluation.bags.ros_client import RosClient

NS = f"/{NODE_NAME}"
CAMERA = "/bench/image"
KINDS = outputs.OUTPUTS


def load1() -> float:
    return os.getloadavg()[0]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def export_model(out: Path) -> Path:
    cmd = [sys.executable, "-m", "training.export", "--random-init", "--backbone", "mobilenet_v2"]
    cmd += ["--hierarchy", str(REPO / "config" / "hierarchies" / "iv2018.yaml"), "--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- in-process measurements
def timed_infer(engine: Any, image: np.ndarray) -> tuple[float, Any]:
    """(ms, decisions) of one ``engine.infer`` call."""
    start = time.perf_counter()
    decisions = engine.infer(image)
    return 1000.0 * (time.perf_counter() - start), decisions


def engine_only(model: Path, image: np.ndarray, repeats: int, spin_wait: bool) -> tuple[float, Any, Any]:
    """Median ms of the node's engine in this process; also the last decisions and the engine, kept
    open for the per-frame engine runs interleaved with the node's frames (:func:`run_sequential`)."""
    from hiseg_ros.engines import create_engine

    # what the node's load_engine does
    engine, reason = create_engine(str(model), backend="onnxruntime", spin_wait=spin_wait)
    for _ in range(2):
        decisions = engine.infer(image)
    samples = []
    for _ in range(repeats):
        ms, decisions = timed_infer(engine, image)
        samples.append(ms)
    print(f"engine: {engine.name} ({reason})")
    return statistics.median(samples), decisions, engine


def output_breakdown(image: np.ndarray, decisions: Any, hierarchy: Any, repeats: int) -> dict[str, float]:
    """Median ms of each step the node runs after inference, on these decisions, without DDS."""
    msg_in = rgb8_msg(image)
    _, fit = outputs.fit_input(image, None, (0, 0, 0))
    per_clf, leaf = outputs.restore_decisions(decisions.per_classifier, decisions.leaf, fit)
    lut = outputs.sign_leaf_lut(hierarchy, "traffic-sign-front")
    leaf_msg = mono8_msg if leaf.dtype == np.uint8 else mono16_msg
    steps = {  # messages serialized, as the node publishes them
        "input conversion (image_to_rgb)": lambda: image_to_rgb(msg_in),
        "masks (classifier_masks + mono8 msgs)": lambda: [
            mono8_msg(m, serialized=True) for m in outputs.classifier_masks(hierarchy, per_clf, leaf).values()
        ],
        "mask (leaf msg)": lambda: leaf_msg(leaf, serialized=True),
        "colored (colorize + rgb8 msg)": lambda: rgb8_msg(outputs.colorize(hierarchy, leaf), serialized=True),
        "overlay (find_signs + colorize + overlay + rgb8 msg)": lambda: rgb8_msg(
            outputs.overlay(
                image,
                outputs.colorize(hierarchy, leaf),
                0.5,
                outputs.find_signs(hierarchy, leaf, lut, 16),
                hierarchy.palette,
            ),
            serialized=True,
        ),
        "traffic_signs (find_signs)": lambda: outputs.find_signs(hierarchy, leaf, lut, 16),
    }
    out = {}
    for name, fn in steps.items():
        fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(1000.0 * (time.perf_counter() - start))
        out[name] = statistics.median(samples)
    return out


# --------------------------------------------------------------------------- the node and a client
class Bench(RosClient):
    """An rclpy node in this process, spun in a thread: publishes images, records output arrivals."""

    def __init__(self, serialized: bool = True) -> None:
        super().__init__("hiseg_bench_client")
        self.serialized = serialized
        self.lock = threading.Lock()
        self.arrivals: dict[int, dict[str, float]] = {}  # header stamp (ns) -> topic -> arrival
        self.diagnostics: dict[str, str] = {}
        self.subs: list[Any] = []
        self.publisher = self.node.create_publisher(Image, CAMERA, 1)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.hardware_id == NS:
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def subscribe(self, topics: list[str]) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs = []
        for topic in topics:
            kind = Detection2DArray if topic.endswith("traffic_signs") else Image

            def callback(msg: Any, topic: str = topic) -> None:
                now = time.perf_counter()
                key = cdr_stamp(msg) if self.serialized else stamp_ns(msg.header.stamp)
                with self.lock:
                    self.arrivals.setdefault(key, {})[topic] = now

            sub = self.node.create_subscription(kind, topic, callback, 10, raw=self.serialized)
            self.subs.append(sub)


def output_topics(kind: str, classifiers: list[str]) -> list[str]:
    if kind == "masks":
        return [f"{NS}/{c}/mask" for c in classifiers]
    if kind == "all":
        return [t for k in KINDS for t in output_topics(k, classifiers)]
    return [f"{NS}/{kind}"]


def start_node(model: Path, kinds: list[str], log: Path, node_params: dict[str, str]) -> NodeProcess:
    """The node as launch/hiseg.launch.py starts it, with onnxruntime, ``kinds`` and ``node_params``."""
    extra = ["-p", "backend:=onnxruntime", "-p", f"outputs:=[{','.join(kinds)}]"]
    for name, value in node_params.items():
        extra += ["-p", f"{name}:={value}"]
    return NodeProcess.start(launch_ros_args(model, CAMERA, extra=extra), log)


def frame_stamp(count: int) -> int:
    """Header stamp (ns) of frame ``count``: whole seconds, counting from 1e6 s."""
    return (1_000_000 + count) * NS_PER_S


class Frames:
    """One rgb8 message re-stamped for every frame (stamp = frame number), publish time recorded."""

    def __init__(self, bench: Bench, image: np.ndarray) -> None:
        self.bench = bench
        self.msg = rgb8_msg(image)
        self.msg.header.frame_id = "bench"
        self.raw = rgb8_msg(image, self.msg.header, serialized=True) if bench.serialized else None
        self.sent: dict[int, float] = {}
        self.count = 0

    def publish(self) -> int:
        self.count += 1
        key = frame_stamp(self.count)
        if self.raw is not None:  # re-stamped before the clock starts: the camera's cost, not the node's
            out = restamp_cdr(self.raw, key)
        else:
            set_stamp(self.msg.header, key)
            out = self.msg
        self.sent[key] = time.perf_counter()
        self.bench.publisher.publish(out)
        return key


def wait_for(predicate: Any, timeout: float, every: float = 0.002) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def run_sequential(
    bench: Bench, frames: Frames, topics: list[str], repeats: int, engine_run: Callable[[], float], warmup: int = 2
) -> tuple[list[float], dict[str, list[float]], list[float]]:
    """Latency (ms) of ``repeats`` frames sent one at a time, to the last of ``topics``; per topic; and
    the engine alone in this process right before each frame (node idle), so that both see the same
    machine state: run-to-run drift of the engine time here is larger than the 5 % being measured."""
    samples, engine_samples = [], []
    per_topic: dict[str, list[float]] = {t: [] for t in topics}
    want = set(topics)
    done = lost = 0
    while done < warmup + repeats:
        engine_ms = engine_run()
        key = frames.publish()

        def complete(key: int = key) -> Any:
            with bench.lock:
                got = bench.arrivals.get(key, {})
                return max(got.values()) if want <= set(got) else None

        last = wait_for(complete, 30.0)
        if last is None:  # lost (best-effort input) or the node is not ready: try again
            lost += 1
            if lost > 3:
                raise SystemExit(f"{lost} frames got no complete output within 30 s (try --delivery-probe)")
            continue
        if done >= warmup:
            samples.append(1000.0 * (last - frames.sent[key]))
            engine_samples.append(engine_ms)
            with bench.lock:
                got = dict(bench.arrivals[key])
            for topic in topics:
                per_topic[topic].append(1000.0 * (got[topic] - frames.sent[key]))
        done += 1
        time.sleep(0.05)
    return samples, per_topic, engine_samples


def node_session(
    bench: Bench, model: Path, kinds: list[str], classifiers: list[str], tmp: Path, node_params: dict[str, str]
) -> Any:
    """Start the node with ``kinds`` and wait until it matches our publisher and subscriptions."""
    topics = output_topics("all" if kinds == list(KINDS) else kinds[0], classifiers)
    bench.subscribe(topics)
    log = tmp / f"node_{'_'.join(kinds)}.log"
    proc = start_node(model, kinds, log, node_params)

    def ready() -> bool:
        pubs = all(bench.node.count_publishers(t) > 0 for t in topics)
        return pubs and bench.publisher.get_subscription_count() > 0

    try:
        proc.wait_ready(ready, 120.0, f"publish {', '.join(topics)} and subscribe to {CAMERA}")
    except RuntimeError as exc:
        proc.stop()
        raise SystemExit(str(exc)) from exc
    time.sleep(0.5)
    return proc, topics


def soak(bench: Bench, frames: Frames, proc: NodeProcess, period: float, seconds: float) -> dict:
    overlay = f"{NS}/overlay"
    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            value = rss_kib(proc.pid)
            if value is not None:
                rss.append((time.monotonic() - t0, value))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    with bench.lock:
        before = dict(bench.diagnostics)
    start_count = frames.count
    sampler.start()
    t0 = time.perf_counter()
    next_t = t0
    loads = [load1()]
    while time.perf_counter() - t0 < seconds:
        frames.publish()
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    time.sleep(3.0)  # let the last frame come out
    loads.append(load1())
    stop.set()
    sampler.join()
    with bench.lock:
        after = dict(bench.diagnostics)
        arrivals = dict(bench.arrivals)
    windows: dict[int, list[float]] = {}
    latencies = []
    for i in range(start_count + 1, frames.count + 1):
        key = frame_stamp(i)
        got = arrivals.get(key, {})
        if overlay in got:
            sent = frames.sent[key]
            ms = 1000.0 * (got[overlay] - sent)
            latencies.append(ms)
            windows.setdefault(int((sent - t0) // 10), []).append(ms)

    def delta(key: str) -> int:
        return int(after.get(key, "0")) - int(before.get(key, "0"))

    return {
        "sent": frames.count - start_count,
        "processed": len(latencies),
        "dropped": delta("frames_dropped"),
        "latencies": latencies,
        "windows": windows,
        "rss": rss,
        "loads": loads,
    }


# --------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported ONNX model (default: export the random-init one)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=[*KINDS, "all"], choices=[*KINDS, "all"])
    parser.add_argument("--soak-seconds", type=float, default=60.0, help="0: no soak")
    parser.add_argument(
        "--input-reliability",
        choices=("reliable", "best_effort"),
        default="best_effort",
        help="the node's input_qos.reliability (default: the node's own default; see --delivery-probe)",
    )
    parser.add_argument(
        "--cpu-spin-wait",
        action="store_true",
        help="the node's cpu_spin_wait (ONNX Runtime threads busy-wait between runs; node default: off)",
    )
    parser.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="one more node parameter for every session, e.g. memory.retain_freed:=false (repeatable)",
    )
    parser.add_argument(
        "--client",
        choices=("serialized", "messages"),
        default="serialized",
        help="serialized (default): this process publishes the camera image already serialized and takes "
        "the outputs serialized, reading only their stamps, so that rclpy's conversions here are not "
        "counted as the node's; messages: Python messages both ways (what a Python subscriber pays)",
    )
    parser.add_argument(
        "--delivery-probe",
        type=int,
        default=0,
        metavar="N",
        help="only count how many of N frames (1.5 s apart) reach the node with --input-reliability",
    )
    args = parser.parse_args()
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        raise SystemExit("source scripts/ros_env.sh first (DDS must stay on loopback)")

    retain_freed_memory()  # this process allocates images every frame too, like the node (its default)
    node_params = {
        "input_qos.reliability": args.input_reliability,
        "cpu_spin_wait": "true" if args.cpu_spin_wait else "false",
    }
    for item in args.node_param:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"--node-param: expected NAME:=VALUE, got {item!r}")
        node_params[name] = value
    image = synthetic_street(args.height, args.width)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or export_model(tmp / "iv2018_mnv2.onnx")
        print(f"input {args.height}x{args.width} rgb8, {os.cpu_count()} CPUs, medians of {args.repeats}", flush=True)

        eng_ms, decisions, engine = engine_only(model, image, args.repeats, args.cpu_spin_wait)
        hierarchy = engine.hierarchy
        print(f"engine only: median {eng_ms:.1f} ms (load {load1():.2f})", flush=True)

        def engine_run() -> float:
            return timed_infer(engine, image)[0]

        breakdown = output_breakdown(image, decisions, hierarchy, args.repeats)
        classifiers = list(hierarchy.classifier_names)

        bench = Bench(serialized=args.client == "serialized")
        frames = Frames(bench, image)
        if args.delivery_probe:
            proc, _ = node_session(bench, model, ["mask"], classifiers, tmp, node_params)
            try:
                for _ in range(args.delivery_probe):
                    frames.publish()
                    time.sleep(1.5)
                time.sleep(1.5)
                with bench.lock:
                    got = bench.diagnostics.get("frames_received", "0")
            finally:
                proc.stop()
                bench.close()
            print(
                f"input_qos.reliability {args.input_reliability}: the node received {got} of "
                f"{args.delivery_probe} {args.height}x{args.width} rgb8 frames sent 1.5 s apart (load {load1():.2f})"
            )
            return 0
        rows = []
        soak_result = None
        try:
            for kind in args.kinds:
                kinds = list(KINDS) if kind == "all" else [kind]
                proc, topics = node_session(bench, model, kinds, classifiers, tmp, node_params)
                try:
                    load_before = load1()
                    samples, per_topic, engine_samples = run_sequential(bench, frames, topics, args.repeats, engine_run)
                    if len(topics) > 1:
                        slowest = sorted(per_topic.items(), key=lambda kv: -statistics.median(kv[1]))
                        shown = ", ".join(f"{t.removeprefix(NS + '/')} {statistics.median(v):.1f}" for t, v in slowest)
                        print(f"    per topic (median ms): {shown}", flush=True)
                    time.sleep(1.2)  # one more /diagnostics period
                    with bench.lock:
                        node_inf = float(bench.diagnostics.get("inference_p50_ms", "nan"))
                        node_lat = float(bench.diagnostics.get("latency_p50_ms", "nan"))
                    e2e = statistics.median(samples)
                    eng_k = statistics.median(engine_samples)
                    paired = statistics.median(s - e for s, e in zip(samples, engine_samples, strict=True))
                    rows.append(
                        (
                            kind,
                            e2e,
                            min(samples),
                            pct(samples, 95),
                            node_inf,
                            node_lat,
                            eng_k,
                            paired,
                            load_before,
                            load1(),
                        )
                    )
                    print(
                        f"  {kind:14s} end-to-end median {e2e:7.1f} ms, engine alone {eng_k:7.1f} ms, "
                        f"overhead {paired:+6.1f} ms ({100 * paired / eng_k:+5.1f} %), "
                        f"node inference p50 {node_inf:7.1f} ms (load {load1():.2f})",
                        flush=True,
                    )
                    if kind == "all" and args.soak_seconds > 0:
                        # twice the node's inference rate (its own inference p50 with all outputs on)
                        period = node_inf / 1000.0 / 2.0
                        print(
                            f"soak: {1 / period:.2f} Hz (2x the node's inference rate {1000 / node_inf:.2f} Hz) "
                            f"for {args.soak_seconds:.0f} s",
                            flush=True,
                        )
                        soak_result = soak(bench, frames, proc, period, args.soak_seconds)
                        soak_result["rate_hz"] = 1 / period
                finally:
                    proc.stop()
        finally:
            bench.close()
            engine.close()

    print()
    print(f"engine only (ONNX Runtime, node's options, this process) before the node sessions: median {eng_ms:.1f} ms")
    print()
    print(
        "| outputs | end-to-end median ms | min ms | p95 ms | engine alone, same frames: median ms | "
        "node overhead (median of per-frame differences) | node inference p50 ms | "
        "end-to-end - node inference | of which in the node (latency p50 - inference p50) | "
        "of which DDS both ways (end-to-end - node latency p50) | load 1-min before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, e2e, best, p95, node_inf, node_lat, eng_k, paired, lb, la in rows:
        print(
            f"| {kind} | {e2e:.1f} | {best:.1f} | {p95:.1f} | {eng_k:.1f} | "
            f"{paired:+.1f} ms ({100 * paired / eng_k:+.1f} %) | {node_inf:.1f} | "
            f"{e2e - node_inf:+.1f} ms ({100 * (e2e - node_inf) / node_inf:+.1f} %) | "
            f"{node_lat - node_inf:+.1f} ms | {e2e - node_lat:+.1f} ms | {lb:.2f} -> {la:.2f} |"
        )
    print()
    print("| step after inference (in process, no DDS) | median ms | % of engine-only |")
    print("|---|---|---|")
    for name, ms in breakdown.items():
        print(f"| {name} | {ms:.2f} | {100 * ms / eng_ms:.1f} % |")
    if soak_result is not None:
        s = soak_result
        lat = s["latencies"]
        print()
        print(
            f"soak: {s['rate_hz']:.2f} Hz for {args.soak_seconds:.0f} s, sent {s['sent']}, processed {s['processed']}, "
            f"dropped (latest-frame-only) {s['dropped']}, load {s['loads'][0]:.2f} -> {s['loads'][-1]:.2f}"
        )
        print(
            f"  latency publish -> ~/overlay: p50 {pct(lat, 50):.1f} ms, p95 {pct(lat, 95):.1f} ms, "
            f"max {max(lat):.1f} ms"
        )
        print("  | window | frames | p50 ms | p95 ms | max ms |")
        print("  |---|---|---|---|---|")
        for w in sorted(s["windows"]):
            v = s["windows"][w]
            print(f"  | {10 * w}-{10 * w + 10} s | {len(v)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {max(v):.1f} |")
        rss = [v / 1024.0 for _, v in s["rss"]]
        print(
            f"  node VmRSS ({len(rss)} samples, 1 s apart): first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, "
            f"max {max(rss):.1f} MiB, min {min(rss):.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
