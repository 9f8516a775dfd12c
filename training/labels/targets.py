"""Training targets: native labels -> per-classifier targets; boxes / tags -> pseudo ground truth.

Every sample becomes a :class:`SampleTargets` with one target per classifier of the hierarchy:

* **per-pixel datasets** (Cityscapes, Vistas) go through :meth:`Hierarchy.targets`: hard class
  indices, :data:`IGNORE` where a pixel carries no label for that classifier. Kind ``"pixel"``:
  the loss accumulates them unconditionally.
* **weak datasets** (GTSDB boxes, image-level tags) first become a :class:`NodeDistribution`,
  per-pixel mass over hierarchy *nodes* (leaves or inner classes), made by a
  :class:`PseudoLabelGenerator`; :func:`weak_targets` then projects that distribution onto every
  classifier. Kind ``"weak"``: the loss counts these pixels for a classifier only where the network's
  own decisions above it agree (conditional accumulation, IV 2018 / 2019: the parent for boxes, the
  whole path for tags; :mod:`training.fit.loss`), and the root never learns from them (the paper
  gives box data weight 0 at L1).

Projection (the same for boxes, tags and any future generator): for classifier ``c`` the mass of
node ``m`` goes to the class of ``c`` on the root-to-``m`` path, if ``c`` is on that path at all.
``c``'s target at a pixel is that projected mass renormalised within ``c``; it is valid only where
the mass under ``c`` is at least ``min_mass`` (0.01 in the 2019 paper). A box of class *stop sign*
thus teaches ``traffic_sign`` "front" and ``traffic_sign_front`` "stop"; a tag mapped to an inner node
(``traffic-sign``) teaches nothing below it.

Representation (memory): a 43-class float32 soft target at 512x1024 is 90 MB per image, and a 2019
batch has 12 weak images. But pseudo labels from boxes and tags take only a handful of distinct
distributions per image (one per combination of overlapping boxes; one for tags), so soft targets
are *palette encoded*: an ``int32`` index map (``-1`` = no target) into a small ``K x C`` table of
distributions (:class:`SoftTarget`). That is 4 bytes per pixel whatever ``C``; a generator with truly
per-pixel distributions degrades gracefully to ``K = H*W`` rows, i.e. the dense size. Hard targets
are ``uint8`` maps (``int64`` only after collation, which torch's cross-entropy wants).

Augmentation: boxes are warped before pseudo labels are made (see :mod:`training.data.augment`); a
precomputed :class:`NodeDistribution` is warped through its ``index`` map (nearest, fill ``-1``),
its table is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from hiseg_ros.hierarchy import IGNORE, ROOT, Classifier, Hierarchy
from training.config_schema import reject_unknown_keys
from training.data.readers.base import Box, Sample

PIXEL = "pixel"
WEAK = "weak"
TargetKind = Literal["pixel", "weak"]
BoxMode = Literal["fill", "multihot"]
BOX_MODES: tuple[str, ...] = ("fill", "multihot")
DEFAULT_MIN_MASS = 0.01  # IV 2019: a weak pixel counts for a sub-classifier with >= 1 % mass under it


class PseudoLabelError(ValueError):
    """Weak annotation that cannot be turned into pseudo ground truth; the message names dataset and value."""


# --------------------------------------------------------------------------- node distributions
@dataclass(frozen=True, eq=False)
class NodeDistribution:
    """Per-pixel mass over hierarchy nodes for one image, palette encoded.

    ``table[k]`` is a distribution over ``nodes`` (rows sum to 1); pixel ``(y, x)`` carries
    ``table[index[y, x]]``, or nothing (void) where ``index`` is ``-1``. ``hard`` marks one-hot
    tables (hard pseudo labels: "fill" boxes, Algorithm-1 / CRF label maps): their projections become
    hard targets and hard cross-entropy instead of soft rows.
    """

    nodes: tuple[str, ...]
    index: np.ndarray  # int32 H x W, -1 = void
    table: np.ndarray  # float32 K x len(nodes)
    hard: bool = False

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
        inverse, first = _factorize_rows(rows)
        index[covered] = inverse
        return cls(tuple(nodes), index, rows[first].astype(np.float32))

    def dense(self) -> np.ndarray:
        """``len(nodes) x H x W`` float32 mass (zeros where void): for inspection and tests, not training."""
        padded = np.vstack([self.table, np.zeros((1, len(self.nodes)), np.float32)])
        return np.moveaxis(padded[self.index], -1, 0)


def _factorize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- generators (the seam)
@runtime_checkable
class PseudoLabelGenerator(Protocol):
    """Makes a sample's pseudo ground truth as mass over hierarchy nodes.

    Implementations: :class:`BoxGenerator`, :class:`UniformTagGenerator` (the 2019 default for
    tags); Grad-CAM + saliency + CRF generators, or a loader of precomputed files (hard node-id PNGs
    via :meth:`NodeDistribution.from_node_ids`, ``.npy`` mass via :meth:`NodeDistribution.from_mass`)
    plug in through :class:`TargetBuilder` ``generators``. The result must have the sample image's H x W.
    """

    def __call__(self, sample: Sample) -> NodeDistribution: ...


def _mapped_node(hierarchy: Hierarchy, dataset: str, native: int | str, what: str) -> str | None:
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


@dataclass(frozen=True)
class _Region:
    """Where one box paints: a bounding slice and, for fine masks, the mask inside it."""

    node: str
    ys: slice
    xs: slice
    mask: np.ndarray | None
    area: int


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
) -> NodeDistribution:
    """Boxes -> per-pixel pseudo ground truth over hierarchy nodes.

    ``"multihot"`` (IV 2019): each box adds +1 to its class at its pixels, every pixel is normalised
    to sum 1 (car + person overlap: 1/2, 1/2); ``"fill"``: hard labels, every pixel gets its box's
    class, the smaller box wins where boxes overlap (a sign in front of a billboard), equal areas:
    the later box. Pixels outside every box are void. Box labels are native ids (or tags) mapped by
    the hierarchy; ids mapped to ``null`` are skipped. ``masks[i]`` (bool H x W, optional) replaces
    box ``i``'s rectangle.
    """
    if mode not in BOX_MODES:
        raise ValueError(f"box pseudo labels: mode must be one of {BOX_MODES}, got {mode!r}")
    if masks is not None and len(masks) != len(boxes):
        raise ValueError(f"dataset {dataset!r}: {len(masks)} fine masks for {len(boxes)} boxes")
    shape = (int(shape[0]), int(shape[1]))
    regions = []
    for i, box in enumerate(boxes):
        node = _mapped_node(hierarchy, dataset, box.label, "box label")
        if node is None:
            continue
        region = _box_region(node, box, None if masks is None else masks[i], shape, f"dataset {dataset!r} box {i}")
        if region is not None:
            regions.append(region)
    if not regions:
        return NodeDistribution.void(shape)
    nodes = tuple(dict.fromkeys(r.node for r in regions))
    column = {n: i for i, n in enumerate(nodes)}
    if mode == "fill":
        node_map = np.full(shape, -1, np.int32)
        for region in sorted(regions, key=lambda r: -r.area):  # stable: later box wins ties
            view = node_map[region.ys, region.xs]
            if region.mask is None:
                view[...] = column[region.node]
            else:
                view[region.mask] = column[region.node]
        return NodeDistribution.from_hard(node_map, nodes)
    counts = np.zeros((*shape, len(nodes)), np.uint16)
    for region in regions:
        counts[region.ys, region.xs, column[region.node]] += 1 if region.mask is None else region.mask
    covered = counts.any(-1)
    rows = counts[covered]
    inverse, first = _factorize_rows(rows)
    table = rows[first].astype(np.float64)
    index = np.full(shape, -1, np.int32)
    index[covered] = inverse
    return NodeDistribution(nodes, index, (table / table.sum(1, keepdims=True)).astype(np.float32))


def tag_nodes(hierarchy: Hierarchy, dataset: str, tags: Sequence[str]) -> tuple[str, ...]:
    """The distinct classes of an image's tags (order of first appearance); tags mapped to ``null`` drop out."""
    ds = hierarchy.dataset(dataset)
    if ds.supervision != "tags":
        raise PseudoLabelError(f"dataset {dataset!r} has {ds.supervision!r} supervision, not image-level tags")
    nodes = (_mapped_node(hierarchy, dataset, tag, "tag") for tag in tags)
    return tuple(dict.fromkeys(n for n in nodes if n is not None))


@dataclass(frozen=True, eq=False)
class UniformTagGenerator:
    """IV 2019 image-level pseudo labels: uniform over the present tags' classes, tiled over the image."""

    hierarchy: Hierarchy

    def __call__(self, sample: Sample) -> NodeDistribution:
        shape = sample.image.shape[:2]
        nodes = tag_nodes(self.hierarchy, sample.dataset, sample.tags)
        if not nodes:
            return NodeDistribution.void(shape)
        table = np.full((1, len(nodes)), 1.0 / len(nodes), np.float32)
        return NodeDistribution(nodes, np.zeros(shape, np.int32), table)


@dataclass(frozen=True, eq=False)
class BoxGenerator:
    """Boxes of a sample -> :func:`box_distribution`; ``masks`` supplies per-box fine masks where a dataset has them."""

    hierarchy: Hierarchy
    mode: BoxMode = "multihot"
    masks: Callable[[Sample], Sequence[np.ndarray | None] | None] | None = None

    def __call__(self, sample: Sample) -> NodeDistribution:
        masks = self.masks(sample) if self.masks is not None else None
        return box_distribution(self.hierarchy, sample.dataset, sample.boxes, sample.image.shape[:2], self.mode, masks)


# --------------------------------------------------------------------------- per-sample targets
@dataclass(frozen=True, eq=False)
class SoftTarget:
    """Palette-encoded distribution-valued target of one classifier (see the module docstring).

    ``table[k]`` sums to 1 over the classifier's classes; ``mass[k]`` is the pseudo label's mass
    under the classifier before renormalisation (the loss can apply a stricter ``min_mass``).
    """

    index: np.ndarray  # int32 H x W, -1 = no target
    table: np.ndarray  # float32 K x C
    mass: np.ndarray  # float32 K

    @property
    def valid(self) -> np.ndarray:
        return self.index >= 0

    def dense(self) -> np.ndarray:
        """``C x H x W`` float32 (zeros where invalid): for inspection and tests, not training."""
        padded = np.vstack([self.table, np.zeros((1, self.table.shape[1]), np.float32)])
        return np.moveaxis(padded[self.index], -1, 0)


@dataclass(frozen=True, eq=False)
class SampleTargets:
    """One sample's supervision: hard targets (uint8, :data:`IGNORE` = none) and soft targets per classifier.

    ``kind`` ``"pixel"``: real per-pixel labels, hard only. ``"weak"``: pseudo labels, subject to
    conditional accumulation in the loss; a pixel may not carry both a hard and a soft target for
    one classifier. ``from_tags``: weak targets made from image-level tags, which localise nothing
    themselves, so the loss gates them on the whole root-to-classifier path (boxes: the parent only).
    """

    kind: TargetKind
    hard: dict[str, np.ndarray]
    soft: dict[str, SoftTarget] = field(default_factory=dict)
    from_tags: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (PIXEL, WEAK):
            raise ValueError(f"SampleTargets.kind: expected 'pixel' or 'weak', got {self.kind!r}")
        if not self.hard:
            raise ValueError("SampleTargets.hard: needs at least one classifier (it fixes the target size)")
        shapes = {name: t.shape for name, t in self.hard.items()}
        shapes.update({f"soft {name}": s.index.shape for name, s in self.soft.items()})
        if len(set(shapes.values())) != 1 or len(self.shape) != 2:
            raise ValueError(f"SampleTargets: all targets must share one H x W, got {shapes}")
        for name, t in self.hard.items():
            if t.dtype != np.uint8:
                raise ValueError(f"SampleTargets.hard[{name!r}]: expected uint8, got {t.dtype}")
        if self.soft and self.kind == PIXEL:
            raise ValueError("SampleTargets: per-pixel samples carry hard labels only (soft targets are pseudo labels)")
        if self.from_tags and self.kind == PIXEL:
            raise ValueError("SampleTargets: from_tags marks pseudo labels; a per-pixel sample cannot carry it")
        for name, s in self.soft.items():
            if name in self.hard and (s.valid & (self.hard[name] != IGNORE)).any():
                raise ValueError(f"SampleTargets: classifier {name!r} has both a hard and a soft target at some pixels")

    @property
    def shape(self) -> tuple[int, ...]:
        return next(iter(self.hard.values())).shape


def _ignore_maps(hierarchy: Hierarchy, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {c.name: np.full(shape, IGNORE, np.uint8) for c in hierarchy.classifiers}


def pixel_targets(hierarchy: Hierarchy, sample: Sample) -> SampleTargets:
    """Per-pixel dataset: :meth:`Hierarchy.targets` of the native label map, kind ``"pixel"``."""
    if sample.label is None:
        raise ValueError(
            f"dataset {sample.dataset!r} sample {sample.sample_id!r}: per-pixel dataset without a label map"
        )
    return SampleTargets(PIXEL, hierarchy.targets(sample.dataset, sample.label))


def _projection(hierarchy: Hierarchy, clf: Classifier, nodes: Sequence[str]) -> np.ndarray:
    """``len(nodes) x C`` 0/1 matrix: node ``m`` -> the class of ``clf`` on the path to ``m`` (if any)."""
    proj = np.zeros((len(nodes), clf.num_classes), np.float64)
    for i, node in enumerate(nodes):
        step = dict(hierarchy.path(node)).get(clf.name)
        if step is not None:
            proj[i, step] = 1.0
    return proj


def weak_targets(
    hierarchy: Hierarchy,
    distribution: NodeDistribution,
    min_mass: float = DEFAULT_MIN_MASS,
    supervise_root: bool = False,
    from_tags: bool = False,
) -> SampleTargets:
    """Project a pseudo label over nodes onto every classifier (kind ``"weak"``; see the module docstring).

    Hard distributions give hard targets, others palette-encoded soft targets; a classifier gets a
    soft entry only where some pixel is valid for it. The root's targets stay :data:`IGNORE`: weak
    data never trains the root classifier (the papers' rule), unless ``supervise_root`` asks for it:
    a flat baseline has nothing but a root, and learns nothing from boxes or tags otherwise.
    """
    if not 0 < min_mass <= 1:
        raise ValueError(f"min_mass must be in (0, 1], got {min_mass}")
    shape = distribution.shape
    hard = _ignore_maps(hierarchy, shape)
    soft: dict[str, SoftTarget] = {}
    for clf in hierarchy.classifiers:
        if (clf.node == ROOT and not supervise_root) or distribution.table.shape[0] == 0:
            continue
        proj = _projection(hierarchy, clf, distribution.nodes)
        if not proj.any():
            continue
        projected = distribution.table.astype(np.float64) @ proj  # K x C
        mass = projected.sum(1)
        keep = (mass >= min_mass - 1e-9) & (mass > 0)
        if not keep.any():
            continue
        if distribution.hard:
            row_class = np.append(np.where(keep, projected.argmax(1), IGNORE), IGNORE).astype(np.uint8)
            hard[clf.name] = row_class[distribution.index]  # index -1 picks the trailing IGNORE
            continue
        remap = np.full(len(keep) + 1, -1, np.int32)
        remap[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int32)
        index = remap[distribution.index]
        if (index >= 0).any():
            table = (projected[keep] / mass[keep, None]).astype(np.float32)
            soft[clf.name] = SoftTarget(index, table, mass[keep].astype(np.float32))
    return SampleTargets(WEAK, hard, soft, from_tags)


# --------------------------------------------------------------------------- builder (config -> targets)
@dataclass(frozen=True)
class PseudoLabelConfig:
    """Configuration of weak supervision: box mode ``"multihot"`` (IV 2019) or ``"fill"``, and ``min_mass``."""

    box_mode: BoxMode = "multihot"
    min_mass: float = DEFAULT_MIN_MASS
    supervise_root: bool = False

    def __post_init__(self) -> None:
        if self.box_mode not in BOX_MODES:
            raise ValueError(f"pseudo_labels.box_mode: expected one of {list(BOX_MODES)}, got {self.box_mode!r}")
        if not 0 < self.min_mass <= 1:
            raise ValueError(f"pseudo_labels.min_mass: expected a number in (0, 1], got {self.min_mass!r}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object] | None) -> PseudoLabelConfig:
        """From a config section; unknown keys are errors (a typo must not silently select the default)."""
        raw = dict(raw or {})
        reject_unknown_keys("pseudo_labels", raw, ("box_mode", "min_mass", "supervise_root"))
        return cls(**raw)  # type: ignore[arg-type]


class TargetBuilder:
    """Sample -> :class:`SampleTargets`, dispatching on the dataset's supervision in the hierarchy.

    ``pixel`` datasets use :func:`pixel_targets`; ``boxes`` datasets a :class:`BoxGenerator`;
    ``tags`` datasets a :class:`UniformTagGenerator`. ``generators`` overrides the generator per
    dataset name (the seam for CAM / saliency / CRF or precomputed pseudo labels).
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        config: PseudoLabelConfig | None = None,
        generators: Mapping[str, PseudoLabelGenerator] | None = None,
    ) -> None:
        self.hierarchy = hierarchy
        self.config = config or PseudoLabelConfig()
        self.generators = dict(generators or {})
        for name in self.generators:
            if self.hierarchy.dataset(name).supervision == PIXEL:
                raise ValueError(
                    f"TargetBuilder: dataset {name!r} has per-pixel labels; pseudo-label generators are for weak data"
                )

    def generator_for(self, dataset: str) -> PseudoLabelGenerator:
        if dataset in self.generators:
            return self.generators[dataset]
        supervision = self.hierarchy.dataset(dataset).supervision
        if supervision == "boxes":
            return BoxGenerator(self.hierarchy, self.config.box_mode)
        if supervision == "tags":
            return UniformTagGenerator(self.hierarchy)
        raise ValueError(f"dataset {dataset!r} has per-pixel labels, no pseudo-label generator")

    def distribution(self, sample: Sample) -> NodeDistribution:
        """The weak sample's pseudo label from its dataset's generator, checked against the image size."""
        distribution = self.generator_for(sample.dataset)(sample)
        if distribution.shape != tuple(sample.image.shape[:2]):
            raise PseudoLabelError(
                f"dataset {sample.dataset!r} sample {sample.sample_id!r}: pseudo label is {distribution.shape}, "
                f"image is {sample.image.shape[:2]}"
            )
        return distribution

    def weak_targets(self, distribution: NodeDistribution, from_tags: bool = False) -> SampleTargets:
        """Per-classifier targets of a pseudo label (made here or warped by the caller, e.g. into a crop);
        ``from_tags``: it came from image-level tags (the loss gates those on the whole path)."""
        config = self.config
        return weak_targets(self.hierarchy, distribution, config.min_mass, config.supervise_root, from_tags)

    def __call__(self, sample: Sample) -> SampleTargets:
        supervision = self.hierarchy.dataset(sample.dataset).supervision
        if supervision == PIXEL:
            return pixel_targets(self.hierarchy, sample)
        return self.weak_targets(self.distribution(sample), from_tags=supervision == "tags")


# --------------------------------------------------------------------------- batches
@dataclass(frozen=True, eq=False)
class SoftBatch:
    """A batch's soft targets of one classifier: per-sample tables concatenated, indices offset."""

    index: torch.Tensor  # int64 B x H x W, -1 = no target
    table: torch.Tensor  # float32 K x C
    mass: torch.Tensor  # float32 K


@dataclass(frozen=True, eq=False)
class TargetBatch:
    """Collated targets: ``weak[b]`` is True for pseudo-labelled samples, ``from_tags[b]`` for those made from
    image-level tags (None: none are); hard targets int64 (255 = ignore)."""

    weak: torch.Tensor  # bool B
    hard: dict[str, torch.Tensor]  # int64 B x H x W
    soft: dict[str, SoftBatch]
    from_tags: torch.Tensor | None = None  # bool B

    @property
    def batch_size(self) -> int:
        return int(self.weak.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        t = next(iter(self.hard.values()))
        return (int(t.shape[-2]), int(t.shape[-1]))

    def to(self, device: torch.device | str) -> TargetBatch:
        soft = {k: SoftBatch(s.index.to(device), s.table.to(device), s.mass.to(device)) for k, s in self.soft.items()}
        tags = None if self.from_tags is None else self.from_tags.to(device)
        return TargetBatch(self.weak.to(device), {k: t.to(device) for k, t in self.hard.items()}, soft, tags)


def collate_targets(items: Sequence[SampleTargets]) -> TargetBatch:
    """Stack samples of one size into torch tensors; classifiers a sample lacks are IGNORE / no target."""
    if not items:
        raise ValueError("collate_targets: empty batch")
    shapes = [t.shape for t in items]
    if len(set(shapes)) != 1:
        raise ValueError(f"collate_targets: samples of one batch must share H x W, got {shapes}")
    shape = shapes[0]
    names = list(dict.fromkeys(n for t in items for n in (*t.hard, *t.soft)))
    hard = {}
    for name in names:
        stack = np.stack([t.hard.get(name, np.full(shape, IGNORE, np.uint8)) for t in items])
        hard[name] = torch.from_numpy(stack.astype(np.int64))
    soft = {}
    for name in names:
        present = [t.soft[name] for t in items if name in t.soft]
        if not present:
            continue
        widths = {s.table.shape[1] for s in present}
        if len(widths) != 1:
            raise ValueError(f"collate_targets: soft targets of {name!r} have different class counts {sorted(widths)}")
        indices, tables, masses, offset = [], [], [], 0
        for t in items:
            s = t.soft.get(name)
            if s is None:
                indices.append(np.full(shape, -1, np.int64))
                continue
            indices.append(np.where(s.index >= 0, s.index.astype(np.int64) + offset, -1))
            tables.append(s.table)
            masses.append(s.mass)
            offset += s.table.shape[0]
        soft[name] = SoftBatch(
            torch.from_numpy(np.stack(indices)),
            torch.from_numpy(np.concatenate(tables).astype(np.float32)),
            torch.from_numpy(np.concatenate(masses).astype(np.float32)),
        )
    weak = torch.tensor([t.kind == WEAK for t in items], dtype=torch.bool)
    return TargetBatch(weak, hard, soft, torch.tensor([t.from_tags for t in items], dtype=torch.bool))
