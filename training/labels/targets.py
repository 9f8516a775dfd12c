"""Training targets: native labels -> per-classifier targets; pseudo labels -> weak per-classifier targets.

Every sample becomes a :class:`SampleTargets` with one target per classifier of the hierarchy:

* **per-pixel datasets** (Cityscapes, Vistas) go through :meth:`Hierarchy.targets`: hard class
  indices, :data:`IGNORE` where a pixel carries no label for that classifier. Kind ``"pixel"``:
  the loss accumulates them unconditionally.
* **weak datasets** (GTSDB boxes, image-level tags) first become a
  :class:`~training.labels.node_distribution.NodeDistribution`, per-pixel mass over hierarchy
  *nodes* (leaves or inner classes), made by a pseudo-label generator (:mod:`training.labels.boxes`,
  :mod:`training.labels.tags`, :mod:`training.labels.pseudo_labels`); :func:`weak_targets` then
  projects that distribution onto every classifier. Kind ``"weak"``: the loss counts these pixels
  for a classifier only where the network's own decisions above it agree (conditional
  accumulation, IV 2018 / 2019: the parent for boxes, the whole path for tags;
  :mod:`training.fit.loss`), and the root never learns from them (the paper gives box data
  weight 0 at L1), except from box cores when ``pseudo_labels.box_core`` asks
  (:mod:`training.labels.boxes`): there the root gets a hard target, the root class of the box's
  node, wherever all boxes over the pixel agree on it.

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
are ``uint8`` maps (``int64`` only after collation, which torch's cross-entropy wants:
:mod:`training.labels.collate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hiseg_ros.hierarchy import IGNORE, ROOT, Classifier, Hierarchy
from training.data.readers.base import Sample
from training.labels.boxes import BOX_MODES, BoxGenerator, BoxMode
from training.labels.node_distribution import NodeDistribution, PseudoLabelError, PseudoLabelGenerator
from training.labels.tags import UniformTagGenerator

PIXEL = "pixel"
WEAK = "weak"
TAUGHT_BY = (PIXEL, "boxes")  # supervisions whose labels teach the network to tell classes apart
TAG_CLASSIFIERS = ("all", "untaught")  # pseudo_labels.tag_classifiers
TargetKind = Literal["pixel", "weak"]
DEFAULT_MIN_MASS = 0.01  # IV 2019: a weak pixel counts for a sub-classifier with >= 1 % mass under it


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


@dataclass(frozen=True, eq=False)
class SampleTargets:
    """One sample's supervision: hard targets (uint8, :data:`IGNORE` = none) and soft targets per classifier.

    ``kind`` ``"pixel"``: real per-pixel labels, hard only. ``"weak"``: pseudo labels, subject to
    conditional accumulation in the loss; a pixel may not carry both a hard and a soft target for
    one classifier. ``from_tags``: weak targets made from image-level tags, which localise nothing
    themselves, so the loss gates them on the whole root-to-classifier path (boxes: the parent only).
    ``sure_root``: this weak sample's hard root targets are box cores, as sure as a per-pixel label,
    so the loss averages them with the per-pixel ones instead of with the weak pixels.
    """

    kind: TargetKind
    hard: dict[str, np.ndarray]
    soft: dict[str, SoftTarget] = field(default_factory=dict)
    from_tags: bool = False
    sure_root: bool = False

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
        if (self.from_tags or self.sure_root) and self.kind == PIXEL:
            raise ValueError(
                "SampleTargets: from_tags / sure_root mark pseudo labels; a per-pixel sample cannot carry them"
            )
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


def _core_root_targets(distribution: NodeDistribution, proj: np.ndarray) -> np.ndarray:
    """Hard root targets of the flagged rows whose whole mass lies under one root class; IGNORE elsewhere."""
    projected = distribution.table.astype(np.float64) @ proj  # K x C
    mass = projected.sum(1)
    sure = distribution.root_rows & (projected.max(1, initial=0.0) >= mass - 1e-6) & (mass > 0)
    row_class = np.append(np.where(sure, projected.argmax(1), IGNORE), IGNORE).astype(np.uint8)
    return row_class[distribution.index]


def weak_targets(
    hierarchy: Hierarchy,
    distribution: NodeDistribution,
    min_mass: float = DEFAULT_MIN_MASS,
    supervise_root: bool = False,
    from_tags: bool = False,
    classifiers: frozenset[str] | None = None,
) -> SampleTargets:
    """Project a pseudo label over nodes onto every classifier (kind ``"weak"``; see the module docstring).

    Hard distributions give hard targets, others palette-encoded soft targets; a classifier gets a
    soft entry only where some pixel is valid for it. The root's targets stay :data:`IGNORE`: weak
    data never trains the root classifier (the papers' rule), unless ``supervise_root`` asks for it:
    a flat baseline has nothing but a root, and learns nothing from boxes or tags otherwise. Rows
    flagged in ``distribution.root_rows`` (box cores) give the root a hard target in any case,
    where their mass falls under a single root class. ``classifiers``: only these get targets (None: all).
    """
    if not 0 < min_mass <= 1:
        raise ValueError(f"min_mass must be in (0, 1], got {min_mass}")
    shape = distribution.shape
    hard = _ignore_maps(hierarchy, shape)
    soft: dict[str, SoftTarget] = {}
    sure_root = False
    for clf in hierarchy.classifiers:
        if classifiers is not None and clf.name not in classifiers:
            continue
        if clf.node == ROOT and not supervise_root and distribution.root_rows is not None:
            hard[clf.name] = _core_root_targets(distribution, _projection(hierarchy, clf, distribution.nodes))
            sure_root = True
            continue
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
    return SampleTargets(WEAK, hard, soft, from_tags, sure_root)


def taught_nodes(hierarchy: Hierarchy) -> frozenset[str]:
    """Nodes some per-pixel or box dataset labels, directly or through a descendant."""
    taught: set[str] = set()
    for mapping in hierarchy.datasets.values():
        if mapping.supervision not in TAUGHT_BY:
            continue
        for node in mapping.ids.values():
            if node is not None:
                taught.add(node)
                taught.update(hierarchy.ancestors(node))
    return frozenset(taught)


def untaught_classifiers(hierarchy: Hierarchy) -> frozenset[str]:
    """Classifiers with at least one class that no per-pixel or box dataset labels: the ones only
    weaker labels (image-level tags) can teach to tell all their classes apart."""
    taught = taught_nodes(hierarchy)
    return frozenset(c.name for c in hierarchy.classifiers if any(n not in taught for n in c.classes))


def tag_classifier_set(hierarchy: Hierarchy, choice: str | tuple[str, ...]) -> frozenset[str] | None:
    """The classifiers ``pseudo_labels.tag_classifiers`` lets tag-derived targets train (None: all);
    ValueError naming an unknown classifier (the config check adds the file and key)."""
    if choice == "all":
        return None
    if choice == "untaught":
        return untaught_classifiers(hierarchy)
    known = [c.name for c in hierarchy.classifiers]
    unknown = [n for n in choice if n not in known]
    if unknown:
        raise ValueError(f"{unknown} not classifiers of hierarchy {hierarchy.name!r} ({known})")
    return frozenset(choice)


# --------------------------------------------------------------------------- builder (config -> targets)
@dataclass(frozen=True)
class PseudoLabelConfig:
    """Configuration of weak supervision: box mode ``"multihot"`` (IV 2019) or ``"fill"``, and ``min_mass``."""

    box_mode: BoxMode = "multihot"
    min_mass: float = DEFAULT_MIN_MASS
    supervise_root: bool = False
    box_core: float = 0.0  # share of each box's area (centred) that also teaches the root; 0 = never
    # which classifiers tag-derived targets train: "all" (IV 2019); "untaught": only those with a
    # class no per-pixel or box set labels (where stronger labels teach every class, the tags' pseudo
    # labels can only add their errors); or a list of classifier names ([]: none, the tag images
    # then only pass through the network, a control for what their mere presence changes)
    tag_classifiers: str | tuple[str, ...] = "all"

    def __post_init__(self) -> None:
        choice = self.tag_classifiers
        if isinstance(choice, list):
            object.__setattr__(self, "tag_classifiers", choice := tuple(choice))
        names_ok = isinstance(choice, tuple) and all(isinstance(n, str) for n in choice)
        if not names_ok and choice not in TAG_CLASSIFIERS:
            raise ValueError(
                f"pseudo_labels.tag_classifiers: expected one of {list(TAG_CLASSIFIERS)} or a list of "
                f"classifier names, got {choice!r}"
            )
        if not (isinstance(self.box_core, (int, float)) and 0.0 <= self.box_core < 1.0):
            raise ValueError(f"pseudo_labels.box_core: expected a number in [0, 1), got {self.box_core!r}")
        if self.box_mode not in BOX_MODES:
            raise ValueError(f"pseudo_labels.box_mode: expected one of {list(BOX_MODES)}, got {self.box_mode!r}")
        if not 0 < self.min_mass <= 1:
            raise ValueError(f"pseudo_labels.min_mass: expected a number in (0, 1], got {self.min_mass!r}")


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
        self.tag_classifiers = tag_classifier_set(hierarchy, self.config.tag_classifiers)  # None: all
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
            return BoxGenerator(self.hierarchy, self.config.box_mode, core=self.config.box_core)
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
        only = self.tag_classifiers if from_tags else None
        return weak_targets(self.hierarchy, distribution, config.min_mass, config.supervise_root, from_tags, only)

    def __call__(self, sample: Sample) -> SampleTargets:
        supervision = self.hierarchy.dataset(sample.dataset).supervision
        if supervision == PIXEL:
            return pixel_targets(self.hierarchy, sample)
        return self.weak_targets(self.distribution(sample), from_tags=supervision == "tags")
