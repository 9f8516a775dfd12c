"""Pseudo ground truth as mass over hierarchy nodes, and the seam that makes it.

A weak annotation (boxes, image-level tags, or a precomputed pseudo label) becomes a
:class:`NodeDistribution`: per-pixel mass over hierarchy *nodes* (leaves or inner classes), made by
a :class:`PseudoLabelGenerator`. :func:`training.labels.targets.weak_targets` then projects it onto
every classifier.

Representation (memory): pseudo labels from boxes and tags take only a handful of distinct
distributions per image (one per combination of overlapping boxes; one for tags), so a
distribution is *palette encoded*: an ``int32`` index map (``-1`` = void) into a small ``K x N``
table, 4 bytes per pixel whatever the number of nodes.

Augmentation: boxes are warped before pseudo labels are made (see :mod:`training.data.augment`); a
precomputed :class:`NodeDistribution` is warped through its ``index`` map (nearest, fill ``-1``),
its table is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hiseg_ros.hierarchy import Hierarchy
from training.data.readers.base import Sample


class PseudoLabelError(ValueError):
    """Weak annotation that cannot be turned into pseudo ground truth; the message names dataset and value."""


@dataclass(frozen=True, eq=False)
class NodeDistribution:
    """Per-pixel mass over hierarchy nodes for one image, palette encoded.

    ``table[k]`` is a distribution over ``nodes`` (rows sum to 1); pixel ``(y, x)`` carries
    ``table[index[y, x]]``, or nothing (void) where ``index`` is ``-1``. ``hard`` marks one-hot
    tables (hard pseudo labels: "fill" boxes, Algorithm-1 / CRF label maps): their projections become
    hard targets and hard cross-entropy instead of soft rows.

    ``root_rows`` (bool, one per table row, optional) marks rows sure enough to teach the root
    classifier as well: the cores of boxes (:func:`training.labels.boxes.box_distribution`). A flag
    per row rather than a pixel mask, so that warping ``index`` into a crop carries it along.
    """

    nodes: tuple[str, ...]
    index: np.ndarray  # int32 H x W, -1 = void
    table: np.ndarray  # float32 K x len(nodes)
    hard: bool = False
    root_rows: np.ndarray | None = None  # bool K: these rows may also train the root

    def __post_init__(self) -> None:
        index = np.asarray(self.index)
        table = np.asarray(self.table, dtype=np.float32)
        if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"NodeDistribution.index: expected an H x W integer map, got {index.dtype} {index.shape}")
        if table.ndim != 2 or table.shape[1] != len(self.nodes):
            raise ValueError(
                f"NodeDistribution.table: expected K x {len(self.nodes)} (one column per node), got {table.shape}"
            )
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"NodeDistribution.nodes: duplicate nodes in {self.nodes}")
        if index.size and (int(index.min()) < -1 or int(index.max()) >= table.shape[0]):
            raise ValueError(
                f"NodeDistribution.index: values must be -1 (void) or rows 0..{table.shape[0] - 1}, "
                f"got [{int(index.min())}, {int(index.max())}]"
            )
        if table.size and ((table < 0).any() or not np.allclose(table.sum(1), 1.0, atol=1e-4)):
            raise ValueError("NodeDistribution.table: rows must be non-negative and sum to 1")
        if self.root_rows is not None:
            root_rows = np.asarray(self.root_rows)
            if root_rows.dtype != bool or root_rows.shape != (table.shape[0],):
                raise ValueError(
                    f"NodeDistribution.root_rows: expected {table.shape[0]} booleans (one per table row), "
                    f"got {root_rows.dtype} {root_rows.shape}"
                )
            object.__setattr__(self, "root_rows", root_rows)
        object.__setattr__(self, "index", index.astype(np.int32, copy=False))
        object.__setattr__(self, "table", table)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.index.shape[0]), int(self.index.shape[1]))

    @classmethod
    def void(cls, shape: tuple[int, int]) -> NodeDistribution:
        """No pseudo label anywhere (an image without usable tags or boxes)."""
        return cls((), np.full(shape, -1, np.int32), np.zeros((0, 0), np.float32))

    @classmethod
    def from_hard(cls, node_map: np.ndarray, nodes: Sequence[str]) -> NodeDistribution:
        """Hard node labels: ``node_map`` holds indices into ``nodes``, ``-1`` for void."""
        nodes = tuple(nodes)
        return cls(nodes, np.asarray(node_map), np.eye(len(nodes), dtype=np.float32), hard=True)

    @classmethod
    def from_node_ids(cls, id_map: np.ndarray, hierarchy: Hierarchy, void: int | None = None) -> NodeDistribution:
        """Hard labels given as hierarchy class ids (e.g. a precomputed pseudo-label PNG).

        ``void`` defaults to the hierarchy's flattened-map void value (255 or 65535); every other
        value must be the id of a class (leaf or inner node) of the hierarchy.
        """
        id_map = np.asarray(id_map).astype(np.int64, copy=False)
        void = hierarchy.void_value if void is None else void
        ids = np.array([c.id for c in hierarchy.classes], dtype=np.int64)
        lut = np.full(max(int(ids.max()), void, int(id_map.max(initial=0))) + 1, -2, np.int32)
        lut[ids] = np.arange(len(ids), dtype=np.int32)
        lut[void] = -1
        node_map = lut[np.clip(id_map, 0, None)]
        node_map[id_map < 0] = -2
        if (node_map == -2).any():
            bad = np.unique(id_map[node_map == -2]).tolist()
            raise PseudoLabelError(f"pseudo-label ids {bad[:20]} are not classes of hierarchy {hierarchy.name!r}")
        return cls.from_hard(node_map, [c.name for c in hierarchy.classes])

    @classmethod
    def from_mass(cls, mass: np.ndarray, nodes: Sequence[str]) -> NodeDistribution:
        """Dense non-negative mass ``len(nodes) x H x W`` (e.g. a precomputed ``.npy``); zero-mass pixels are void.

        Each pixel is normalised to sum 1 and identical rows share one palette entry.
        """
        mass = np.asarray(mass, dtype=np.float64)
        if mass.ndim != 3 or mass.shape[0] != len(nodes):
            raise ValueError(f"NodeDistribution.from_mass: expected {len(nodes)} x H x W, got {mass.shape}")
        if (mass < 0).any():
            raise ValueError("NodeDistribution.from_mass: negative mass")
        total = mass.sum(0)
        covered = total > 0
        index = np.full(total.shape, -1, np.int32)
        rows = (mass[:, covered] / total[covered]).T  # P x N
        inverse, first = factorize_rows(rows)
        index[covered] = inverse
        return cls(tuple(nodes), index, rows[first].astype(np.float32))


def factorize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row id per row, one representative row index per id) for a P x N array, without sorting rows.

    ``np.unique(axis=0)`` sorts whole rows, which is slow at camera resolution; combining columns into
    one integer key (re-compressed whenever it would overflow) and compacting with a LUT avoids the sort.
    """
    n_rows = rows.shape[0]
    if n_rows == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    if not np.issubdtype(rows.dtype, np.integer):
        _, rows_int = np.unique(rows, return_inverse=True)  # exact value codes, shape preserved
        rows_int = rows_int.reshape(rows.shape)
    else:
        rows_int = rows.astype(np.int64, copy=False)
    key = np.zeros(n_rows, np.int64)
    span = 1
    for col in rows_int.T:
        base = int(col.max()) + 1
        if span * base >= 2**62:
            uniq, key = np.unique(key, return_inverse=True)
            span = len(uniq)
        key = key * base + col
        span *= base
    if span <= max(4 * n_rows, 1 << 16):
        present = np.zeros(span, bool)
        present[key] = True
        remap = np.cumsum(present) - 1
        inverse = remap[key]
    else:
        _, inverse = np.unique(key, return_inverse=True)
    first = np.empty(int(inverse.max()) + 1, np.int64)
    first[inverse] = np.arange(n_rows)
    return inverse.astype(np.int32), first


@runtime_checkable
class PseudoLabelGenerator(Protocol):
    """Makes a sample's pseudo ground truth as mass over hierarchy nodes.

    Implementations: :class:`~training.labels.boxes.BoxGenerator`,
    :class:`~training.labels.tags.UniformTagGenerator` (the 2019 default for tags); Grad-CAM +
    saliency + CRF generators, or a loader of precomputed files (hard node-id PNGs via
    :meth:`NodeDistribution.from_node_ids`, ``.npy`` mass via :meth:`NodeDistribution.from_mass`)
    plug in through :class:`~training.labels.targets.TargetBuilder` ``generators``. The result must
    have the sample image's H x W.
    """

    def __call__(self, sample: Sample) -> NodeDistribution: ...


def mapped_node(hierarchy: Hierarchy, dataset: str, native: int | str, what: str) -> str | None:
    """The class a weak annotation's native id (or tag) is mapped to, ``None`` for ignore.

    Unlike per-pixel label maps these come one value at a time from annotation files, so an
    unmapped or mistyped value is a :class:`PseudoLabelError` naming the dataset and the value.
    """
    ds = hierarchy.dataset(dataset)
    key: int | str = native
    if ds.supervision != "tags":
        if not isinstance(native, int | np.integer):
            raise PseudoLabelError(f"dataset {dataset!r}: {what} {native!r} is not a native id (expected an integer)")
        key = int(native)
    if key not in ds.ids:
        raise PseudoLabelError(
            f"dataset {dataset!r}: unknown {what} {native!r} (not mapped by hierarchy {hierarchy.name!r})"
        )
    return ds.ids[key]
