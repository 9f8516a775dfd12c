"""Export a hierarchical segmentation network to the ONNX model the node runs.

    python -m training.export --checkpoint CKPT --out model.onnx [--hierarchy YAML]
    python -m training.export --random-init --hierarchy YAML --backbone mobilenet_v2 --out model.onnx

The model (opset 18) takes ``image``: ``B x H x W x 3`` uint8 RGB with dynamic B, H and W (a ROS
``rgb8`` buffer goes in untouched; normalisation is in the graph). Its outputs are one uint8
``B x H x W`` decision map per classifier, named after the classifier, in the hierarchy's order
(root first), then ``leaf``: the flattened leaf ids (uint8, or uint16 when the hierarchy's
``mask_dtype`` is uint16) computed in the graph with the hierarchy's decision rule, then
``confidence``: float32 ``B x H x W``, the chosen leaf's probability (the product of the softmax
probabilities of the decisions along the pixel's path; ``--no-confidence`` leaves it out and
writes the graph models had before it existed, which the node also loads). Decisions are
argmax at feature resolution + nearest upsampling (see ``hiseg_ros.engines.torch_graph``, which
is also what the node's PyTorch backend runs). The hierarchy JSON and the network description go
into ``metadata_props`` (keys in ``hiseg_ros.engines.metadata``), so the file alone is enough.

With ``--checkpoint`` the file is read by :func:`hiseg_ros.engines.checkpoint.load_checkpoint`, the
reader the node's PyTorch backend uses (format described there): a missing key, a corrupt
hierarchy, weights that do not fit, or a hierarchy other than ``--hierarchy`` is an error naming
the file.

The file is written atomically: exported into a temporary file next to ``--out``, checked with
``onnx.checker`` (full check), run once in ONNX Runtime against PyTorch, then renamed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiseg_ros.atomic import atomic_output
from hiseg_ros.engines.checkpoint import CheckpointFormatError, ModelConfig, load_checkpoint
from hiseg_ros.engines.metadata import INPUT_NAME, LEAF_OUTPUT, ModelMetadata
from hiseg_ros.engines.torch_graph import CONFIDENCE_OUTPUT, DecisionGraph
from hiseg_ros.hierarchy import Hierarchy, HierarchyError, load_hierarchy
from hiseg_ros.model import BACKBONES, DECODERS, HierarchicalSegNet
from training import REPO

__all__ = [
    "OPSET",
    "ExportError",
    "export_checkpoint",
    "export_model",
    "export_random_init",
    "main",
]

OPSET = 18
EXAMPLE_SHAPE = (2, 64, 96, 3)  # batch 2, not 1: a size-1 example would be specialised to a constant
MAX_BATCH = 64
MIN_SIDE, MAX_SIDE = 32, 8192


class ExportError(RuntimeError):
    """The exported graph failed its checks (onnx.checker, or ONNX Runtime disagreeing with PyTorch)."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(source: Mapping[str, Any], opset: int = OPSET) -> str:
    """JSON provenance string for the metadata: what was exported, by what, when."""
    info = {
        "tool": "training.export",
        **source,
        "torch": torch.__version__,
        "opset": opset,
        "git_commit": _git_commit(),
        "exported_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (3.10 on GPU machines)
    }
    return json.dumps(info, sort_keys=True)


def export_model(
    net: HierarchicalSegNet,
    hierarchy: Hierarchy,
    out: str | Path,
    config: ModelConfig,
    provenance_json: str,
    opset: int = OPSET,
    verify: bool = True,
    confidence: bool = True,
) -> Path:
    """Export ``net`` (+ in-graph decision rule of ``hierarchy``, + the confidence output unless
    ``confidence`` is False) to ``out`` atomically."""
    import onnx

    out = Path(out)
    graph = DecisionGraph(net.eval(), hierarchy, confidence=confidence).eval()
    output_names = [*hierarchy.classifier_names, LEAF_OUTPUT, *([CONFIDENCE_OUTPUT] if confidence else [])]
    example = torch.randint(0, 256, EXAMPLE_SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dims = {
        0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
        1: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
        2: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_shapes={INPUT_NAME: dims},
        )
    model = program.model_proto
    for node in model.graph.node:  # exporter debug info: source paths and stack traces of this machine
        del node.metadata_props[:]
    meta = ModelMetadata(
        hierarchy=hierarchy,
        classifiers=hierarchy.classifier_names,
        backbone=config.backbone,
        output_stride=config.output_stride,
        provenance=provenance_json,
        model_config=config.to_dict(),
        confidence_output=CONFIDENCE_OUTPUT if confidence else "",
    )
    props = {p.key: p.value for p in model.metadata_props} | meta.to_props()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)

    with atomic_output(out, fsync=False) as tmp:
        onnx.save_model(model, tmp)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{out}: exported model fails onnx.checker: {exc}") from None
        if verify:
            verify_against_torch(tmp, graph, hierarchy)
    return out


def verify_against_torch(model_path: Path, graph: DecisionGraph, hierarchy: Hierarchy) -> None:
    """Run the written file in ONNX Runtime on one odd-sized image: same outputs as PyTorch, leaf
    map equal to ``hierarchy.flatten`` of the decisions, confidence within float tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (1, 67, 101, 3), dtype=np.uint8)
    got = session.run(None, {INPUT_NAME: image})
    with torch.inference_mode():
        expected = [t.numpy() for t in graph(torch.from_numpy(image))]
    if graph.confidence:
        conf, conf_torch = got.pop(), expected.pop()
        if conf.dtype != np.float32 or conf.shape != conf_torch.shape or not np.allclose(conf, conf_torch, atol=1e-4):
            raise ExportError(f"{model_path}: the confidence output differs from PyTorch's")
    decisions = dict(zip(hierarchy.classifier_names, got, strict=False))
    if not np.array_equal(got[-1], hierarchy.flatten(decisions)) or got[-1].dtype != hierarchy.mask_dtype:
        raise ExportError(f"{model_path}: the leaf output differs from the hierarchy's decision rule")
    for name, a, b in zip([*hierarchy.classifier_names, LEAF_OUTPUT], got, expected, strict=True):
        agreement = float((a == b).mean()) if a.shape == b.shape else 0.0
        if agreement < 0.999:
            raise ExportError(f"{model_path}: output {name!r} agrees with PyTorch on {agreement:.2%} of pixels only")


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    hierarchy: Hierarchy | None = None,
    verify: bool = True,
    confidence: bool = True,
) -> Path:
    """Checkpoint file -> ONNX model; ``hierarchy`` (``--hierarchy``): the one it must have been trained for."""
    loaded = load_checkpoint(checkpoint, expected_hierarchy=hierarchy)
    source = {
        "source": "checkpoint",
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": loaded.sha256,
        "training": loaded.training_info,
    }
    return export_model(
        loaded.net, loaded.hierarchy, out, loaded.config, provenance(source), verify=verify, confidence=confidence
    )


def export_random_init(
    hierarchy: Hierarchy,
    out: str | Path,
    config: ModelConfig,
    seed: int = 0,
    verify: bool = True,
    confidence: bool = True,
) -> Path:
    """An untrained (random-init) model: lets the node work start before training has results."""
    torch.manual_seed(seed)
    net = config.build(hierarchy).eval()
    source = {"source": "random-init", "seed": seed, "hierarchy_source": hierarchy.source}
    return export_model(net, hierarchy, out, config, provenance(source), verify=verify, confidence=confidence)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description="Export a hierarchical segmentation model to ONNX for the node."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (model, hierarchy, model_config)")
    source.add_argument("--random-init", action="store_true", help="export an untrained network (needs --hierarchy)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--hierarchy", type=Path, help="hierarchy YAML; with --checkpoint it must match the checkpoint")
    defaults = ModelConfig()
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone, help="(--random-init)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=defaults.output_stride)
    parser.add_argument("--shared-channels", type=int, default=defaults.shared_channels)
    parser.add_argument("--adaptation-depth", type=int, default=defaults.adaptation_depth)
    parser.add_argument("--adaptation-dilation", type=int, default=defaults.adaptation_dilation)
    parser.add_argument("--decoder", choices=DECODERS, default=defaults.decoder, help="(--random-init)")
    parser.add_argument("--seed", type=int, default=0, help="(--random-init) weight initialisation seed")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument(
        "--no-confidence", action="store_true", help="leave out the confidence output (the graph of older exports)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.random_init and args.hierarchy is None:
        parser.error("--random-init needs --hierarchy")
    try:
        hierarchy = load_hierarchy(args.hierarchy) if args.hierarchy is not None else None
        if args.random_init:
            assert hierarchy is not None
            config = ModelConfig(
                args.backbone,
                args.output_stride,
                args.shared_channels,
                args.adaptation_depth,
                args.adaptation_dilation,
                args.decoder,
            )
            out = export_random_init(
                hierarchy, args.out, config, args.seed, verify=not args.no_verify, confidence=not args.no_confidence
            )
        else:
            out = export_checkpoint(
                args.checkpoint, args.out, hierarchy, verify=not args.no_verify, confidence=not args.no_confidence
            )
    except (CheckpointFormatError, HierarchyError, ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
