"""The inference graph as a torch module: uint8 image in, per-classifier decisions and leaf map out.

The ONNX exporter (``training.export``) and the PyTorch backend run this very module, so the two
agree by construction instead of by two implementations kept in step.

Why not the network followed by :func:`hiseg_ros.model.decide`: that upsamples the labels as uint8
and has no leaf map, and TensorRT is strict about small integer types: it reads uint8 only in Cast layers (no
uint8 Transpose, Resize or Shape; TensorRT 8.6 casts uint8 only from / to float) and has no uint16
at all. So here the uint8 image is cast to float before anything else, the labels are upsampled as
float (class indices < 256 are exact in float16 and float32, so an FP16 engine decides the same),
the decision outputs are cast float -> uint8, and the rule runs on int32. Nearest upsampling is the
same index selection for every dtype, so the decisions equal ``decide_one``'s ``argmax_nearest``
(a test checks it). ``engines.bindings.adapt_for_tensorrt`` fixes the rest (Shape of the input,
a uint16 leaf output) in the graph handed to TensorRT.

The leaf map is :meth:`Hierarchy.flatten` written with gathers and ``where`` over small int32 lookup
tables built from the hierarchy, computed at full resolution from the upsampled decisions so that
``leaf == hierarchy.flatten(per_classifier)`` holds exactly for every backend and precision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ..hierarchy import ROOT, Hierarchy
from ..model import DecisionMode, HierarchicalSegNet, NormalizeInput

__all__ = ["DecisionGraph", "LeafFlatten", "flatten_tables", "upsampled_labels"]

_MAX_UINT8_CLASSES = 256


def flatten_tables(hierarchy: Hierarchy) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Lookup tables of the decision rule, from the hierarchy's public structure.

    Returns ``(steps, node_ids)``: one step per classifier in the hierarchy's order (root first,
    parents before children) as ``(owner node index or -1 for root, class index -> node index)``,
    and ``node_ids[node index] = class id``. Node indices are positions in ``hierarchy.classes``.
    """
    index = {c.name: i for i, c in enumerate(hierarchy.classes)}
    steps = []
    for clf in hierarchy.classifiers:
        owner = -1 if clf.node == ROOT else index[clf.node]
        steps.append((owner, [index[name] for name in clf.classes]))
    return steps, [c.id for c in hierarchy.classes]


class LeafFlatten(nn.Module):
    """Per-classifier decisions (int tensors of one shape, hierarchy order) -> leaf ids.

    Start from the root decision's node; wherever the current node owns the next classifier (the
    classifiers are ordered parents first) take that classifier's decision instead. The tables are
    non-persistent buffers: they are code derived from the hierarchy, not weights.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__()
        steps, node_ids = flatten_tables(hierarchy)
        self.owners = [owner for owner, _ in steps]
        self.num_steps = len(steps)
        for i, (_, lut) in enumerate(steps):
            self.register_buffer(f"lut_{i}", torch.tensor(lut, dtype=torch.int32), persistent=False)
        # uint8 maps: ids < 255 held as float, as TensorRT 8.6 casts to uint8 only from float. uint16
        # maps: int32 ids (TensorRT has no uint16; its engine outputs int32, the host narrows it).
        self.out_dtype = torch.uint8 if hierarchy.mask_dtype is np.uint8 else torch.uint16
        table_dtype = torch.float32 if self.out_dtype == torch.uint8 else torch.int32
        self.register_buffer("node_ids", torch.tensor(node_ids, dtype=table_dtype), persistent=False)

    def forward(self, decisions: list[torch.Tensor]) -> torch.Tensor:
        luts = [getattr(self, f"lut_{i}") for i in range(self.num_steps)]
        current = _lookup(luts[0], decisions[0])
        for lut, owner, dec in zip(luts[1:], self.owners[1:], decisions[1:], strict=True):
            current = torch.where(current == owner, _lookup(lut, dec), current)
        return _lookup(self.node_ids, current).to(self.out_dtype)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` as a plain 1-D Gather: advanced indexing exports as GatherND, which needs
    int64 indices and which TensorRT handles less well than Gather."""
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


class DecisionGraph(nn.Module):
    """``B x H x W x 3`` uint8 RGB -> ``(decision per classifier..., leaf)``, all ``B x H x W``.

    Decisions are uint8 class indices (argmax at feature resolution, nearest upsampling to the
    input size); the leaf map is uint8, or uint16 when the hierarchy's ``mask_dtype`` is uint16.
    """

    def __init__(self, net: HierarchicalSegNet, hierarchy: Hierarchy) -> None:
        super().__init__()
        names = tuple(hierarchy.classifier_names)
        if tuple(net.classifier_names) != names:
            raise ValueError(f"network classifiers {list(net.classifier_names)} != hierarchy classifiers {list(names)}")
        for name, size in hierarchy.classifier_sizes:
            if net.num_classes[name] != size:
                raise ValueError(f"classifier {name!r}: network has {net.num_classes[name]} classes, hierarchy {size}")
            if size > _MAX_UINT8_CLASSES:
                raise ValueError(f"classifier {name!r} has {size} classes: its decisions do not fit uint8")
        self.net = net
        self.normalize = NormalizeInput("uint8_nchw")  # fed 0..255 float NCHW, see forward
        self.flatten = LeafFlatten(hierarchy)
        self.classifier_names = names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = (image.shape[1], image.shape[2])
        # Cast first, then transpose: the arithmetic is NormalizeInput's, the order suits TensorRT.
        logits = self.net(self.normalize(image.to(torch.float32).permute(0, 3, 1, 2)))
        upsampled = [upsampled_labels(logits[name], size) for name in self.classifier_names]
        leaf = self.flatten([u.to(torch.int32) for u in upsampled])
        return (*[u.to(torch.uint8) for u in upsampled], leaf)


def upsampled_labels(
    logits: torch.Tensor, size: tuple[int, int], mode: DecisionMode = "argmax_nearest"
) -> torch.Tensor:
    """``B x C x h x w`` logits -> ``B x H x W`` float class indices at ``size``: the graph's rule
    (``argmax_nearest``), or ``bilinear_argmax`` (training's upsampling before the argmax), which
    ``bench/bench_decisions.py`` times in ONNX Runtime against it. Same values as ``decide_one``."""
    if mode == "argmax_nearest":
        labels = logits.argmax(dim=1, keepdim=True).to(torch.float32)
        return functional.interpolate(labels, size=size, mode="nearest").squeeze(1)
    if mode == "bilinear_argmax":
        up = functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return up.argmax(dim=1).to(torch.float32)
    raise ValueError(f"unknown decision mode {mode!r}")
