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

With ``confidence=True`` the graph also returns the probability of the chosen leaf: the product,
along the pixel's decision path, of each classifier's softmax probability of the class it chose
(the hierarchy's factorisation P(leaf) = P(c1) P(c2 | c1) ...; for a flat hierarchy, the softmax
maximum). It is computed at feature resolution, where the walk over the path is cheap, and
upsampled nearest like the decisions, which gives the same value as walking at full resolution
(nearest upsampling only selects feature cells). float32, ``B x H x W``, in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ..hierarchy import ROOT, Hierarchy
from ..model import DecisionMode, HierarchicalSegNet, NormalizeInput

__all__ = ["CONFIDENCE_OUTPUT", "DecisionGraph", "LeafFlatten", "flatten_tables", "upsampled_labels"]

CONFIDENCE_OUTPUT = "confidence"
"""Name of the optional graph output: the chosen leaf's probability (float32, B x H x W)."""

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
        current, _ = self._walk(decisions, None)
        return _lookup(self.node_ids, current).to(self.out_dtype)

    def path_probability(self, decisions: list[torch.Tensor], probabilities: list[torch.Tensor]) -> torch.Tensor:
        """Product of ``probabilities[i]`` (classifier i's probability of its decision) over the
        classifiers on each pixel's decision path: the chosen leaf's probability."""
        _, probability = self._walk(decisions, probabilities)
        assert probability is not None
        return probability

    def _walk(
        self, decisions: list[torch.Tensor], probabilities: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        luts = [getattr(self, f"lut_{i}") for i in range(self.num_steps)]
        current = _lookup(luts[0], decisions[0])
        probability = probabilities[0] if probabilities is not None else None
        for i, (lut, owner, dec) in enumerate(zip(luts[1:], self.owners[1:], decisions[1:], strict=True)):
            on_path = current == owner
            current = torch.where(on_path, _lookup(lut, dec), current)
            if probabilities is not None and probability is not None:
                probability = torch.where(on_path, probability * probabilities[i + 1], probability)
        return current, probability


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` as a plain 1-D Gather: advanced indexing exports as GatherND, which needs
    int64 indices and which TensorRT handles less well than Gather."""
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


class DecisionGraph(nn.Module):
    """``B x H x W x 3`` uint8 RGB -> ``(decision per classifier..., leaf[, confidence])``, all ``B x H x W``.

    Decisions are uint8 class indices (argmax at feature resolution, nearest upsampling to the
    input size); the leaf map is uint8, or uint16 when the hierarchy's ``mask_dtype`` is uint16;
    ``confidence`` (float32, only with ``confidence=True``) is the chosen leaf's probability.
    """

    def __init__(self, net: HierarchicalSegNet, hierarchy: Hierarchy, confidence: bool = False) -> None:
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
        self.confidence = confidence

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = (image.shape[1], image.shape[2])
        # Cast first, then transpose: the arithmetic is NormalizeInput's, the order suits TensorRT.
        logits = self.net(self.normalize(image.to(torch.float32).permute(0, 3, 1, 2)))
        upsampled = [upsampled_labels(logits[name], size) for name in self.classifier_names]
        leaf = self.flatten([u.to(torch.int32) for u in upsampled])
        decisions = (*[u.to(torch.uint8) for u in upsampled], leaf)
        if not self.confidence:
            return decisions
        return (*decisions, self._confidence([logits[name] for name in self.classifier_names], size))

    def _confidence(self, logits: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The chosen leaf's probability at feature resolution, upsampled nearest to ``size``."""
        probabilities = [torch.softmax(x, dim=1).amax(dim=1) for x in logits]
        labels = [x.argmax(dim=1).to(torch.int32) for x in logits]
        probability = self.flatten.path_probability(labels, probabilities)
        return functional.interpolate(probability.unsqueeze(1), size=size, mode="nearest").squeeze(1)


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
