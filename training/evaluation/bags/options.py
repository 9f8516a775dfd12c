"""The bag evaluation's options: parsed once from the command line into a frozen :class:`EvaluateOptions`.

The offline and live runs read their settings from this one immutable object (see
:mod:`training.evaluation.bags.evaluate` for what each option does).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hiseg_ros.node_params import SPEC
from hiseg_ros.outputs import SIGN_SPLITS
from training import REPO

from .read import DEFAULT_CAMERA_TOPIC, DEFAULT_LABEL_TOPIC, DEFAULT_SIGN_TOPIC

MODES = ("offline", "live")
OUT_STORAGES = ("same", "sqlite3", "mcap")


@dataclass(frozen=True)
class EvaluateOptions:
    """Everything a bag evaluation is run with; ``model`` is an absolute path."""

    bag: Path
    model: Path
    out: Path
    mode: str = "offline"
    rate_scale: float = 1.0  # live: play at this multiple of the recorded rate
    dataset: str = "cityscapes"  # hierarchy dataset whose native ids the labels hold
    camera_topic: str = DEFAULT_CAMERA_TOPIC
    label_topic: str | None = DEFAULT_LABEL_TOPIC  # None: no ground truth
    sign_topic: str | None = DEFAULT_SIGN_TOPIC  # None: no sign scores
    require_labels: bool = False
    backend: str = "auto"  # offline engine backend
    params_file: Path = REPO / "config" / "hiseg.yaml"  # live: node parameters
    node_args: tuple[str, ...] = ()  # live: extra --ros-args items
    frame_timeout: float = 5.0  # live: seconds to wait for a frame's outputs
    startup_timeout: float = 120.0  # live: seconds for the node to come up
    samples: int = 4  # sample overlays in the report
    out_storage: str = "same"  # output bag storage; same = the input bag's
    output_bag: bool = True
    overlay_alpha: float = SPEC["overlay_alpha"].default  # offline overlay weight
    min_sign_area: int = SPEC["min_sign_area"].default  # offline sign detection
    sign_split: str = SPEC["sign_split"].default  # offline sign instances (hiseg_ros.outputs.find_signs)
    sign_class: str = "traffic-sign-front"  # '' = no traffic_signs
    overwrite: bool = False
    progress: bool = True

    def storage(self, bag_storage: str) -> str:
        """The output bag's storage for an input bag stored as ``bag_storage``."""
        return bag_storage if self.out_storage == "same" else self.out_storage


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluation.bags.evaluate",
        description="Evaluate a model on a rosbag2: offline (the engine on every frame) "
        "or live (through the running node).",
    )
    ap.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap)")
    ap.add_argument("--model", required=True, type=Path, help="exported model (.onnx)")
    ap.add_argument("--out", required=True, type=Path, help="result folder (created atomically)")
    ap.add_argument("--mode", choices=MODES, default="offline")
    ap.add_argument("--rate-scale", type=float, default=1.0, help="live: play at this multiple of the recorded rate")
    ap.add_argument("--dataset", default="cityscapes", help="hierarchy dataset whose native ids the labels hold")
    ap.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    ap.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="ground-truth topic ('' = none)")
    ap.add_argument("--sign-topic", default=DEFAULT_SIGN_TOPIC, help="sign ground-truth topic ('' = none)")
    ap.add_argument("--require-labels", action="store_true", help="fail when the bag has no ground-truth topic")
    ap.add_argument("--backend", default="auto", help="offline engine backend (live: set it with --node-arg)")
    ap.add_argument("--params-file", type=Path, default=REPO / "config" / "hiseg.yaml", help="live: node parameters")
    ap.add_argument("--node-arg", action="append", default=[], help="live: extra --ros-args item (repeatable)")
    ap.add_argument("--frame-timeout", type=float, default=5.0, help="live: seconds to wait for a frame's outputs")
    ap.add_argument("--startup-timeout", type=float, default=120.0, help="live: seconds for the node to come up")
    ap.add_argument("--samples", type=int, default=4, help="sample overlays in the report")
    ap.add_argument("--out-storage", choices=OUT_STORAGES, default="same")
    ap.add_argument("--no-output-bag", action="store_true")
    # Offline rendering follows the node: its parameters' defaults (hiseg_ros.node_params).
    ap.add_argument("--overlay-alpha", type=float, default=SPEC["overlay_alpha"].default, help="offline overlay weight")
    ap.add_argument("--min-sign-area", type=int, default=SPEC["min_sign_area"].default, help="offline sign detection")
    ap.add_argument("--sign-split", choices=SIGN_SPLITS, default=SPEC["sign_split"].default, help="offline sign split")
    ap.add_argument("--sign-class", default="traffic-sign-front", help="'' = no traffic_signs")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def parse_options(argv: Sequence[str] | None = None) -> EvaluateOptions:
    """The command line as :class:`EvaluateOptions` (argparse exits with 2 on a bad one)."""
    ap = _parser()
    args = ap.parse_args(argv)
    if args.rate_scale <= 0:
        ap.error("--rate-scale must be positive")
    return EvaluateOptions(
        bag=args.bag,
        model=args.model.resolve(),
        out=args.out,
        mode=args.mode,
        rate_scale=args.rate_scale,
        dataset=args.dataset,
        camera_topic=args.camera_topic,
        label_topic=args.label_topic or None,
        sign_topic=args.sign_topic or None,
        require_labels=args.require_labels,
        backend=args.backend,
        params_file=args.params_file,
        node_args=tuple(args.node_arg),
        frame_timeout=args.frame_timeout,
        startup_timeout=args.startup_timeout,
        samples=args.samples,
        out_storage=args.out_storage,
        output_bag=not args.no_output_bag,
        overlay_alpha=args.overlay_alpha,
        min_sign_area=args.min_sign_area,
        sign_split=args.sign_split,
        sign_class=args.sign_class,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
