"""Boxes -> pseudo ground truth: each box paints its class over its rectangle (or fine mask).

GTSDB-style detection labels carry a class per box and nothing per pixel; the IV 2019 rule turns
them into per-pixel mass over hierarchy nodes (:class:`~training.labels.node_distribution.NodeDistribution`).

Box cores: a box says *which* class but not *where* inside the rectangle; its centre, though, is
the object for every compact shape (the "Box^i" labels of Khoreva et al., CVPR 2017, "Simple Does
It", which keep the inner 20 % of a box's area). With ``core`` > 0 the centred rectangle holding
that share of each box's area is marked (``NodeDistribution.root_rows``) as sure enough to teach
the root classifier too, which the papers' rule never lets weak data do; the rest of the box
teaches only the sub-classifiers. At 0.1 the core lies inside every GTSDB sign shape (circle,
octagon, diamond, upward or downward triangle) of a tight box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hiseg_ros.hierarchy import Hierarchy
from training.data.readers.base import Box, Sample
from training.labels.node_distribution import NodeDistribution, PseudoLabelError, factorize_rows, mapped_node

BoxMode = Literal["fill", "multihot"]
BOX_MODES: tuple[str, ...] = ("fill", "multihot")


@dataclass(frozen=True)
class _Region:
    """Where one box paints: a bounding slice and, for fine masks, the mask inside it."""

    node: str
    ys: slice
    xs: slice
    mask: np.ndarray | None
    area: int


def _core(region: _Region, share: float) -> tuple[slice, slice]:
    """The centred sub-rectangle of ``region`` with ``share`` of its height x width (at least 1 x 1)."""
    side = float(np.sqrt(share))

    def centred(span: slice) -> slice:
        n = span.stop - span.start
        k = max(1, round(n * side))
        start = span.start + (n - k) // 2
        return slice(start, start + k)

    return centred(region.ys), centred(region.xs)


def _box_region(node: str, box: Box, mask: np.ndarray | None, shape: tuple[int, int], where: str) -> _Region | None:
    h, w = shape
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise PseudoLabelError(f"{where}: fine mask is {mask.shape}, expected the image's {shape}")
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            return None
        ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        local = mask[ys, xs]
        return _Region(node, ys, xs, local, int(local.sum()))
    if not (0 <= box.x0 <= box.x1 < w and 0 <= box.y0 <= box.y1 < h):
        raise PseudoLabelError(f"{where}: box {box} lies outside the {w}x{h} image (inclusive pixel coordinates)")
    ys, xs = slice(box.y0, box.y1 + 1), slice(box.x0, box.x1 + 1)
    return _Region(node, ys, xs, None, (box.y1 - box.y0 + 1) * (box.x1 - box.x0 + 1))


def box_distribution(
    hierarchy: Hierarchy,
    dataset: str,
    boxes: Sequence[Box],
    shape: tuple[int, int],
    mode: BoxMode = "multihot",
    masks: Sequence[np.ndarray | None] | None = None,
    core: float = 0.0,
) -> NodeDistribution:
    """Boxes -> per-pixel pseudo ground truth over hierarchy nodes.

    ``"multihot"`` (IV 2019): each box adds +1 to its class at its pixels, every pixel is normalised
    to sum 1 (car + person overlap: 1/2, 1/2); ``"fill"``: hard labels, every pixel gets its box's
    class, the smaller box wins where boxes overlap (a sign in front of a billboard), equal areas:
    the later box. Pixels outside every box are void. Box labels are native ids (or tags) mapped by
    the hierarchy; ids mapped to ``null`` are skipped. ``masks[i]`` (bool H x W, optional) replaces
    box ``i``'s rectangle. ``core`` (0 <= core < 1): the share of each box's area, centred, whose
    pixels get ``root_rows`` (module docstring); a fine mask is exact, so all of it is core then.
    """
    if not 0.0 <= core < 1.0:
        raise ValueError(f"box pseudo labels: core must be in [0, 1), got {core!r}")
    if mode not in BOX_MODES:
        raise ValueError(f"box pseudo labels: mode must be one of {BOX_MODES}, got {mode!r}")
    if masks is not None and len(masks) != len(boxes):
        raise ValueError(f"dataset {dataset!r}: {len(masks)} fine masks for {len(boxes)} boxes")
    shape = (int(shape[0]), int(shape[1]))
    regions = []
    for i, box in enumerate(boxes):
        node = mapped_node(hierarchy, dataset, box.label, "box label")
        if node is None:
            continue
        region = _box_region(node, box, None if masks is None else masks[i], shape, f"dataset {dataset!r} box {i}")
        if region is not None:
            regions.append(region)
    if not regions:
        return NodeDistribution.void(shape)
    nodes = tuple(dict.fromkeys(r.node for r in regions))
    column = {n: i for i, n in enumerate(nodes)}
    core_map = None
    if core > 0:
        core_map = np.zeros(shape, bool)
        for region in regions:
            if region.mask is None:
                core_map[_core(region, core)] = True
            else:
                core_map[region.ys, region.xs] |= region.mask
    if mode == "fill":
        node_map = np.full(shape, -1, np.int32)
        for region in sorted(regions, key=lambda r: -r.area):  # stable: later box wins ties
            view = node_map[region.ys, region.xs]
            if region.mask is None:
                view[...] = column[region.node]
            else:
                view[region.mask] = column[region.node]
        if core_map is None:
            return NodeDistribution.from_hard(node_map, nodes)
        n = len(nodes)  # core pixels use a second copy of the one-hot rows, flagged for the root
        node_map[core_map & (node_map >= 0)] += n
        eye = np.eye(n, dtype=np.float32)
        flags = np.repeat([False, True], n)
        return NodeDistribution(nodes, node_map, np.vstack([eye, eye]), hard=True, root_rows=flags)
    counts = np.zeros((*shape, len(nodes) + 1), np.uint16)  # last channel: the pixel is a box core
    for region in regions:
        counts[region.ys, region.xs, column[region.node]] += 1 if region.mask is None else region.mask
    if core_map is not None:
        counts[..., -1] = core_map
    covered = counts[..., :-1].any(-1)
    rows = counts[covered]
    inverse, first = factorize_rows(rows)
    table = rows[first, :-1].astype(np.float64)
    index = np.full(shape, -1, np.int32)
    index[covered] = inverse
    table = (table / table.sum(1, keepdims=True)).astype(np.float32)
    root_rows = rows[first, -1] > 0 if core_map is not None else None
    return NodeDistribution(nodes, index, table, root_rows=root_rows)


@dataclass(frozen=True, eq=False)
class BoxGenerator:
    """Boxes of a sample -> :func:`box_distribution`; ``masks`` supplies per-box fine masks where a
    dataset has them; ``core``: the share of each box that may teach the root (0: none)."""

    hierarchy: Hierarchy
    mode: BoxMode = "multihot"
    masks: Callable[[Sample], Sequence[np.ndarray | None] | None] | None = None
    core: float = 0.0

    def __call__(self, sample: Sample) -> NodeDistribution:
        masks = self.masks(sample) if self.masks is not None else None
        shape = sample.image.shape[:2]
        return box_distribution(self.hierarchy, sample.dataset, sample.boxes, shape, self.mode, masks, self.core)
