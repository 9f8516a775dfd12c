"""The hierarchical loss of Meletis & Dubbelman (IV 2018, IV 2019).

Per classifier ``j``::

    L^j = -1/|P1| sum_{P1} log p_j(target)  -  1/|P2| sum_{P2} sum_k q_k log p_j,k

``P1``: pixels of per-pixel ("pixel") samples labelled for ``j``, accumulated unconditionally.
``P2``: pseudo-labelled ("weak") pixels with a target for ``j`` *and* where the network's own
decisions (argmax of the logits, detached) above ``j`` agree with the target's path:

* **box-derived** pixels (IV 2018): the box already localises the object, so only the decision of
  ``j``'s parent classifier must be ``j``'s parent class: ``traffic_sign_front`` learns from a GTSDB
  box where ``traffic_sign`` says "front", ``drivable`` where the root says "drivable". Box pixels
  reach the root (``supervise_root``) unconditionally. Box *cores* (``pseudo_labels.box_core``,
  :attr:`TargetBatch.sure_root`) reach the root in any hierarchy, and count in ``P1``: the centre
  of a tight box is the object as surely as a per-pixel label, and averaged with the weak pixels
  instead they would weigh as much as all per-pixel labels together.
* **tag-derived** pixels (IV 2019; :attr:`TargetBatch.from_tags`): an image-level tag tiled over the
  crop localises nothing, so *every* decision on the path must agree: the root predicted the top
  node of the path and each intermediate classifier the next node, down to ``j``'s parent. The parent
  alone is not enough: the front/back classifier says "front" almost everywhere, and a "stop sign"
  tag would give ``traffic_sign_front`` a "stop" target on every pixel of the crop. The root has no
  decision above it; its analogue of "the path agrees" is its own decision: a tag pixel counts for
  the root only where the root already decides a class the tag gives mass to, and its target there
  is that class (the decision is the whole path). Under a flat hierarchy (``supervise_root``, the
  only classifier is the root over the leaves) a "stop sign" tag therefore trains the root only
  where it already says "stop": tags sharpen what the network localised by itself, as they do for a
  hierarchical network, and never label the whole crop. Under a hierarchy the root gets no tag targets
  unless ``supervise_root`` asks (:func:`training.labels.targets.weak_targets`).

Hard weak targets ("fill" boxes, hard pseudo-label maps) use ``q`` one-hot. Each term exists only if
its set is non-empty, so an empty set adds exactly 0 (no NaN, no gradient). Total: ``sum_j w_j L^j``
with the paper's weights root 1.0, every other classifier 0.1.

Class weights (``loss.class_weights``, optional, per classifier and class): each pixel's term is
multiplied by the weight of its target class (of a soft target: the ``q``-weighted mean of its
classes' weights) and each average divides by the sum of the weights instead of the count, as
PyTorch's weighted cross entropy does. A short schedule's mIoU is held down by thin and small
classes (pole, traffic light, person, bicycle) that the unweighted average barely sees; weighting
them is the usual remedy (ENet / SegNet class balancing, mmsegmentation's ``class_weight``).

Memory: logits arrive at feature resolution and are upsampled bilinearly (``align_corners=False``)
to the target size, but only the labelled pixels are gathered (``N x C``) before ``log_softmax``, so
the full-resolution ``B x C x H x W`` tensor of a classifier is transient (neither the gather nor
the interpolation keeps it for backward). Soft targets stay palette encoded (an index per pixel into
a ``K x C`` table, :class:`training.labels.collate.SoftBatch`) until the gathered pixels are expanded to
``N x C``. The decisions are kept as one int64 map per parent classifier (and the root's when tags
reach it), the path agreement as one bool map per parent classifier.

On a GPU (``dense``, the default off the CPU) two things change, not the values:

* the sums run over every pixel with the mask as a 0/1 factor: a boolean gather has a
  data-dependent size, so the host would wait for the device at every one of them (a dozen times
  per step), while the dense form queues the whole loss without a synchronisation; its pixel
  counts stay device tensors until the loop logs them. What branches on the batch (any weak, tag
  or box-core sample) is read on the host before the batch moves. One full-resolution log-softmax
  per classifier serves all of its terms (up to three), each of which then only gathers or weighs.
* the bilinear upsampling is two matrix products (``A_h @ logits @ A_w^T``, the interpolation
  matrices of ``interpolate`` itself): CUDA's ``interpolate`` backward scatters every
  full-resolution gradient into the few feature cells with atomic adds (about a thousand per cell
  and channel at output stride 16, all contending for the same addresses); the product's backward
  is two more products, which tensor hardware is built for.

The CPU keeps the gather and ``interpolate``: it computes only the labelled pixels, there is no
device to wait for, and there the products are not faster for the whole loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from hiseg_ros.hierarchy import IGNORE, ROOT, Hierarchy
from training.labels.collate import TargetBatch
from training.labels.targets import DEFAULT_MIN_MASS

ROOT_WEIGHT = 1.0
SUB_WEIGHT = 0.1


def default_weights(hierarchy: Hierarchy) -> dict[str, float]:
    """The papers' loss weights: 1.0 for the root classifier, 0.1 for every sub-classifier."""
    return {c.name: ROOT_WEIGHT if c.node == ROOT else SUB_WEIGHT for c in hierarchy.classifiers}


@dataclass(frozen=True)
class LossOutput:
    """``total`` for backward; per classifier the unweighted ``L^j`` (detached) and ``(|P1|, |P2|)`` for logging."""

    total: torch.Tensor
    per_classifier: dict[str, torch.Tensor]
    pixels: dict[str, tuple[int, int]]


@dataclass
class _Term:
    """Running sum and count of one of the two averages of ``L^j``."""

    total: torch.Tensor | None = None
    count: int | torch.Tensor = 0  # pixels (logged); a device tensor in the dense form
    mass: torch.Tensor | float = 0.0  # the denominator: the pixels' summed class weights (without weights: count)

    def add(self, value: torch.Tensor, count: int | torch.Tensor, mass: torch.Tensor | float | None = None) -> None:
        self.total = value if self.total is None else self.total + value
        self.count = self.count + count
        self.mass = self.mass + (count if mass is None else mass)

    def add_pixels(self, per_pixel: torch.Tensor, count: torch.Tensor, weight: torch.Tensor | None) -> None:
        """The dense form's per-pixel losses (0 where not counted), their count and, with class
        weights, each pixel's weight (0 where not counted)."""
        if weight is None:
            self.add(per_pixel.sum(), count)
        else:
            self.add((weight * per_pixel).sum(), count, weight.sum())

    def mean(self) -> torch.Tensor | None:
        """The average; in the dense form an empty set has total 0 and mass 0, and adds exactly 0."""
        if self.total is None:
            return None
        mass = self.mass.clamp(min=1e-12) if isinstance(self.mass, torch.Tensor) else self.mass
        return self.total / mass


class HierarchicalLoss(nn.Module):
    """``forward(logits, batch)``: logits per classifier name (``B x C x h x w``), a collated :class:`TargetBatch`.

    ``weights`` overrides the default weights per classifier (others keep 1.0 root / 0.1);
    ``min_mass`` drops soft targets whose pseudo-label mass under the classifier is smaller
    (targets already apply it when built; a stricter value here takes precedence).
    ``class_weights``: per classifier, class name -> weight of its pixels (others 1; module docstring).
    Weak root targets exist only with ``supervise_root`` (flat baselines): box-derived ones count
    unconditionally, tag-derived ones where the root already decides a tagged class (module docstring).
    ``dense``: the masked sums over every pixel (no host synchronisation; None: dense off the CPU).
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        weights: Mapping[str, float] | None = None,
        min_mass: float = DEFAULT_MIN_MASS,
        class_weights: Mapping[str, Mapping[str, float]] | None = None,
        dense: bool | None = None,
    ) -> None:
        super().__init__()
        self.dense = dense
        self.hierarchy = hierarchy
        self.weights = default_weights(hierarchy)
        for name, weight in (weights or {}).items():
            if name not in self.weights:
                raise ValueError(
                    f"loss weights: unknown classifier {name!r} (hierarchy {hierarchy.name!r} has {list(self.weights)})"
                )
            if not weight >= 0:
                raise ValueError(f"loss weights: {name!r} must be >= 0, got {weight!r}")
            self.weights[name] = float(weight)
        if not 0 < min_mass <= 1:
            raise ValueError(f"min_mass must be in (0, 1], got {min_mass}")
        self.min_mass = float(min_mass)
        self.sizes = dict(hierarchy.classifier_sizes)
        # classifier -> (parent classifier, class index of the parent that owns it); root: None
        self.parents: dict[str, tuple[str, int] | None] = {
            c.name: None if c.node == ROOT else hierarchy.path(c.node)[-1] for c in hierarchy.classifiers
        }
        self._parent_names = {p[0] for p in self.parents.values() if p is not None}
        self.class_weights = class_weight_vectors(hierarchy, class_weights or {})

    # ------------------------------------------------------------------ validation
    def _validate(self, logits: Mapping[str, torch.Tensor], batch: TargetBatch) -> None:
        where = f"hierarchy {self.hierarchy.name!r}"
        missing = [n for n in self.sizes if n not in logits]
        extra = [n for n in logits if n not in self.sizes]
        if missing or extra:
            raise ValueError(
                f"logits do not match the classifiers of {where}: missing {missing}, unexpected {extra} "
                f"(expected {list(self.sizes)})"
            )
        for name, tensor in logits.items():
            if tensor.ndim != 4:
                raise ValueError(f"logits[{name!r}]: expected B x C x h x w, got shape {tuple(tensor.shape)}")
            if tensor.shape[1] != self.sizes[name]:
                raise ValueError(
                    f"logits[{name!r}] has {tensor.shape[1]} channels, classifier {name!r} of {where} "
                    f"has {self.sizes[name]} classes"
                )
            if tensor.shape[0] != batch.batch_size:
                raise ValueError(f"logits[{name!r}] has batch size {tensor.shape[0]}, targets {batch.batch_size}")
        unknown = [n for n in (*batch.hard, *batch.soft) if n not in self.sizes]
        if unknown:
            raise ValueError(f"targets for unknown classifiers {sorted(set(unknown))} of {where}")
        for name, soft in batch.soft.items():
            if soft.table.shape[1] != self.sizes[name]:
                raise ValueError(
                    f"soft targets of {name!r} have {soft.table.shape[1]} classes, the classifier {self.sizes[name]}"
                )
        for name, hard in batch.hard.items():
            if ((hard != IGNORE) & ((hard < 0) | (hard >= self.sizes[name]))).any():
                raise ValueError(f"hard targets of {name!r} must be 0..{self.sizes[name] - 1} or {IGNORE}")

    # ------------------------------------------------------------------ forward
    def forward(self, logits: Mapping[str, torch.Tensor], batch: TargetBatch) -> LossOutput:
        self._validate(logits, batch)
        device = next(iter(logits.values())).device
        dense = device.type != "cpu" if self.dense is None else self.dense
        any_weak, any_tagged, any_sure = batch.flags()  # on the host, before the batch moves
        batch = batch.to(device, non_blocking=True)
        size = batch.size
        tagged = batch.from_tags if batch.from_tags is not None else torch.zeros_like(batch.weak)
        weak = batch.weak[:, None, None]  # B x 1 x 1
        boxed, tagged = weak & ~tagged[:, None, None], tagged[:, None, None]
        decisions: dict[str, torch.Tensor] = {}
        path_ok: dict[str, torch.Tensor] = {}  # parent classifier -> its decisions above agree (tag pixels)
        total = torch.zeros((), device=device)
        per_classifier: dict[str, torch.Tensor] = {}
        pixels: dict[str, tuple[int, int]] = {}
        for clf in self.hierarchy.classifiers:  # breadth first: parents before children
            name = clf.name
            up = upsample_matmul(logits[name], size) if dense else _upsample(logits[name], size)
            # the dense form's log-probabilities, once per classifier for all of its terms
            logp = functional.log_softmax(up, dim=1) if dense and (name in batch.hard or name in batch.soft) else None
            parent = self.parents[name]
            if any_weak and (name in self._parent_names or (parent is None and any_tagged)):
                with torch.no_grad():
                    # max(1).indices: the same first-maximum index as argmax(1), whose channel
                    # reduction on the CPU is several times slower (bench/bench_train_step.py)
                    decisions[name] = up.detach().max(1).indices
            boxed_here, tagged_here = boxed, tagged  # the root: boxes unconditional, tags see below
            if parent is not None and any_weak:
                parent_ok = decisions[parent[0]] == parent[1]
                above = path_ok.get(parent[0])
                on_path = parent_ok if above is None else parent_ok & above
                if name in self._parent_names:
                    path_ok[name] = on_path
                boxed_here, tagged_here = boxed & parent_ok, tagged & on_path
            p1, p2 = _Term(), _Term()
            cw = self.class_weights.get(name)
            cw = None if cw is None else cw.to(device)
            hard = batch.hard.get(name)
            if hard is not None:
                labelled = hard != IGNORE
                sure = ~weak
                if parent is None and any_sure:
                    sure = sure | batch.sure_root[:, None, None]  # box cores: pooled with per-pixel labels
                _hard_ce(up, hard, labelled & sure, p1, cw, logp)
                if any_weak:
                    _hard_ce(up, hard, labelled & boxed_here & ~sure, p2, cw, logp)
                if any_tagged:
                    if parent is None:  # the root: only where it already decides the tagged class
                        tagged_here = tagged & (decisions[name] == hard)
                    _hard_ce(up, hard, labelled & tagged_here, p2, cw, logp)
            soft = batch.soft.get(name)
            if soft is not None and any_weak:
                row_ok = soft.mass >= self.min_mass - 1e-6
                valid = (soft.index >= 0) & row_ok[soft.index.clamp(min=0)] if row_ok.numel() else soft.index >= 0
                _soft_ce(up, soft.index, soft.table, valid & boxed_here, p2, cw, logp)
                if any_tagged and parent is None:
                    decided = decisions[name]
                    mask = valid & tagged & _has_mass(soft.index, soft.table, decided)
                    _hard_ce(up, decided, mask, p2, cw, logp)
                elif any_tagged:
                    _soft_ce(up, soft.index, soft.table, valid & tagged_here, p2, cw, logp)
            terms = [t for t in (p1.mean(), p2.mean()) if t is not None]
            loss = torch.stack(terms).sum() if terms else torch.zeros((), device=device)
            per_classifier[name] = loss.detach()
            pixels[name] = (p1.count, p2.count)
            total = total + self.weights[name] * loss
        # Every head stays in the graph, with a zero gradient where nothing is labelled for it:
        # backward() is valid on a batch without labels, and DDP gets a gradient for every parameter.
        total = total + sum((t * 0).sum() for t in logits.values() if t.requires_grad)
        return LossOutput(total, per_classifier, pixels)


def _has_mass(index: torch.Tensor, table: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per pixel: does its soft target (palette ``index`` into ``table``) give class ``classes`` any mass?"""
    flat = index.clamp(min=0) * table.shape[1] + classes
    return (index >= 0) & (table.reshape(-1)[flat] > 0) if table.numel() else torch.zeros_like(index, dtype=torch.bool)


def _upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def interpolation_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``n_out x n_in``: linear interpolation (``align_corners=False``) as ``interpolate`` does it,
    read off by interpolating the identity (made on the device: nothing is copied from the host)."""
    eye = torch.eye(n_in, device=device, dtype=dtype)[None]  # 1 x n_in (channels) x n_in
    return functional.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T


def upsample_matmul(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of ``B x C x h x w`` to ``size`` as
    ``A_h @ logits @ A_w^T``: equal to :func:`_upsample` up to rounding, with a backward made of matrix
    products instead of atomic scatters (module docstring)."""
    h, w = logits.shape[-2:]
    if (h, w) == tuple(size):
        return logits
    a_h = interpolation_matrix(h, size[0], logits.device, logits.dtype)
    a_w = interpolation_matrix(w, size[1], logits.device, logits.dtype)
    return a_h @ logits @ a_w.T


def _pixels(up: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked pixels' logits as ``N x C`` float32 (the gather frees the full-resolution tensor)."""
    return up.permute(0, 2, 3, 1)[mask].float()


def class_weight_vectors(hierarchy: Hierarchy, table: Mapping[str, Mapping[str, float]]) -> dict[str, torch.Tensor]:
    """``{classifier: {class name: weight}}`` -> per classifier a ``C`` float vector (unlisted classes 1)."""
    out: dict[str, torch.Tensor] = {}
    by_name = {c.name: c for c in hierarchy.classifiers}
    for name, weights in table.items():
        if name not in by_name:
            raise ValueError(f"class weights: unknown classifier {name!r} (hierarchy {hierarchy.name!r})")
        classes = list(by_name[name].classes)
        vector = torch.ones(len(classes))
        for cls, weight in weights.items():
            if cls not in classes:
                raise ValueError(f"class weights of {name!r}: {cls!r} is not one of its classes {classes}")
            if not weight > 0:
                raise ValueError(f"class weights of {name!r}: {cls!r} must be > 0, got {weight!r}")
            vector[classes.index(cls)] = float(weight)
        out[name] = vector
    return out


def _hard_ce(
    up: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    term: _Term,
    weights: torch.Tensor | None = None,
    logp: torch.Tensor | None = None,
) -> None:
    """Adds the cross entropy of ``target`` over ``mask`` to ``term``: gathered from ``up``, or, in the
    dense form (``logp``: the log-softmax of ``up``), over every pixel with the mask as a factor."""
    if logp is not None:
        chosen = torch.where(mask, target, 0)  # masked-out pixels may hold IGNORE
        keep = mask.to(logp.dtype)
        per_pixel = -logp.gather(1, chosen[:, None])[:, 0] * keep
        term.add_pixels(per_pixel, keep.sum(), None if weights is None else weights[chosen] * keep)
        return
    count = int(mask.sum())
    if not count:
        return
    chosen = target[mask]
    if weights is None:
        term.add(functional.cross_entropy(_pixels(up, mask), chosen, reduction="sum"), count)
        return
    w = weights[chosen]
    term.add((w * functional.cross_entropy(_pixels(up, mask), chosen, reduction="none")).sum(), count, w.sum())


def _soft_ce(
    up: torch.Tensor,
    index: torch.Tensor,
    table: torch.Tensor,
    mask: torch.Tensor,
    term: _Term,
    weights: torch.Tensor | None = None,
    logp: torch.Tensor | None = None,
) -> None:
    """Adds the soft cross entropy of the palette targets over ``mask`` to ``term`` (as :func:`_hard_ce`)."""
    if logp is not None:
        if not table.shape[0]:  # no soft target in the batch (a shape: known on the host)
            return
        keep = mask.to(logp.dtype)
        q = table[torch.where(mask, index, 0)] * keep[..., None]  # B x H x W x C, 0 where not counted
        per_pixel = -(q * logp.permute(0, 2, 3, 1)).sum(-1)
        weight = None if weights is None else (q @ weights) / q.sum(-1).clamp(min=1e-12)  # 0 where not counted
        term.add_pixels(per_pixel, keep.sum(), weight)
        return
    count = int(mask.sum())
    if not count:
        return
    q = table[index[mask]]
    per_pixel = -(q * functional.log_softmax(_pixels(up, mask), dim=1)).sum(1)
    if weights is None:
        term.add(per_pixel.sum(), count)
        return
    w = q @ weights / q.sum(1).clamp(min=1e-12)  # the target's mean class weight
    term.add((w * per_pixel).sum(), count, w.sum())
