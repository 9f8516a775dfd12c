"""Time the two decision modes and measure how often they agree.

``argmax_nearest`` (argmax at feature resolution, nearest upsampling of the labels) versus
``bilinear_argmax`` (bilinear upsampling of every logit map, then argmax), for a root (54 classes)
plus three sub-classifiers, decided at full image resolution.

Timing uses random logits at the network's logit stride (the output stride, halved by
``--decoder``): in PyTorch eager (``decide``), and in ONNX Runtime (``--threads``) as a graph of
just the decisions, written with the exported graph's own rule (``upsampled_labels``), so the
ONNX figure is what each rule would add to an exported model. Agreement uses the logits of the
real (randomly initialised, or ``--pretrained`` backbone) network on a synthetic street-like image.

Options: ``python bench/bench_decisions.py --help``; figures and their commands: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the source tree

from hiseg_ros.engines.torch_graph import upsampled_labels
from hiseg_ros.model import DECODERS, HierarchicalSegNet, decide, normalize_image
from hiseg_ros.model.decoder import decoder_stride

CLASSIFIERS = [("root", 54), ("drivable", 10), ("rider", 3), ("traffic_sign", 2)]
MODES = ("argmax_nearest", "bilinear_argmax")


def synthetic_street(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A crude road scene (sky, facades, road, a few 'cars'): large uniform regions with edges,
    unlike white noise, so the logits have the spatial structure real images give."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    rows = np.linspace(0.0, 1.0, height)[:, None]
    img[:] = np.stack([120 + 80 * rows, 160 + 60 * rows, 230 - 20 * rows], -1)  # sky gradient
    horizon = height * 45 // 100
    for x0 in range(0, width, max(width // 8, 1)):  # facades
        top = int(rng.integers(height // 10, horizon - 10))
        img[top:horizon, x0 : x0 + width // 8] = rng.integers(60, 200, 3)
    img[horizon:] = (90, 90, 95)  # road
    for _ in range(5):  # cars
        y = int(rng.integers(horizon, height - height // 8))
        x = int(rng.integers(0, width - width // 8))
        img[y : y + height // 10, x : x + width // 8] = rng.integers(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples)


class DecisionRule(torch.nn.Module):
    """Logits (one input per classifier) -> uint8 decisions at ``size``, the exported graph's way."""

    def __init__(self, size: tuple[int, int], mode: str) -> None:
        super().__init__()
        self.size, self.mode = size, mode

    def forward(self, *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(upsampled_labels(value, self.size, self.mode).to(torch.uint8) for value in logits)  # type: ignore[arg-type]


def onnxruntime_rule(logits: dict[str, torch.Tensor], size: tuple[int, int], mode: str, threads: int, folder: Path):
    """An ONNX Runtime session of :class:`DecisionRule` and its feed."""
    import onnxruntime as ort

    path = folder / f"{mode}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            DecisionRule(size, mode), tuple(logits.values()), dynamo=True, opset_version=18, input_names=list(logits)
        )
    program.save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, {name: value.numpy() for name, value in logits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--decoder", choices=DECODERS, default="none", help="logits at half the output stride")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--pretrained", action="store_true", help="offline ImageNet backbone weights")
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained checkpoint: agreement on its logits for a rendered held-out scene"
    )
    args = parser.parse_args()
    size = (args.height, args.width)
    torch.manual_seed(0)

    stride = decoder_stride(args.decoder, args.output_stride)
    low = (-(-args.height // stride), -(-args.width // stride))
    random_logits = {name: torch.randn(1, n, *low) for name, n in CLASSIFIERS}
    print(
        f"decisions at {size[0]}x{size[1]} from {low[0]}x{low[1]} logits (stride {stride}), torch threads "
        f"{torch.get_num_threads()}, ONNX Runtime {args.threads} threads, {os.cpu_count()} CPUs, "
        f"load (1 min) {os.getloadavg()[0]:.2f}"
    )
    with torch.no_grad():
        for mode in MODES:
            ms = median_ms(lambda mode=mode: decide(random_logits, size, mode), args.repeats)
            print(f"  {mode:16s} {ms:8.2f} ms (median, PyTorch eager decide)")
    with tempfile.TemporaryDirectory(prefix="bench_decisions_") as tmp:
        for mode in MODES:
            session, feed = onnxruntime_rule(random_logits, size, mode, args.threads, Path(tmp))
            ms = median_ms(lambda session=session, feed=feed: session.run(None, feed), args.repeats)
            print(f"  {mode:16s} {ms:8.2f} ms (median, ONNX Runtime, the exported graph's ops)")

    with torch.no_grad():
        if args.checkpoint:
            from hiseg_ros.engines.checkpoint import load_checkpoint
            from training.data.synthetic import render_scene

            net = load_checkpoint(args.checkpoint).net.eval()
            street = render_scene(*size, seed=10_000, domain="cityscapes").image  # seed outside every preset
            init = f"trained checkpoint {args.checkpoint}"
        else:
            net = HierarchicalSegNet(
                CLASSIFIERS,
                backbone=args.backbone,
                output_stride=args.output_stride,
                pretrained="default" if args.pretrained else None,
                decoder=args.decoder,
            ).eval()
            street = synthetic_street(*size)
            init = "offline ImageNet backbone" if args.pretrained else "random init"
        image = torch.from_numpy(normalize_image(street))
        logits = net(image)
        near, bil = (decide(logits, size, mode) for mode in MODES)
    print(f"load (1 min) after timing {os.getloadavg()[0]:.2f}")
    print(f"agreement on the network's logits ({init}):")
    for name in net.classifier_names:
        agree = 100.0 * (near[name] == bil[name]).float().mean().item()
        print(f"  {name:14s} {agree:7.3f} %")


if __name__ == "__main__":
    main()
