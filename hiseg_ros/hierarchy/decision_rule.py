"""The decision rule and the classifier masks: per-pixel work the node does on every frame.

Both are lookup tables (numpy fancy indexing) built once per hierarchy, never Python loops over
pixels. :class:`~hiseg_ros.hierarchy.Hierarchy` builds one :class:`DecisionRule` on first use and
forwards :meth:`~hiseg_ros.hierarchy.Hierarchy.flatten` and
:meth:`~hiseg_ros.hierarchy.Hierarchy.classifier_masks` to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .nodes import IGNORE, ROOT, Classifier

if TYPE_CHECKING:
    from .tree import Hierarchy


@dataclass(frozen=True, eq=False)
class DecisionRule:
    """Lookup tables of one hierarchy's decision rule and classifier masks.

    ``steps``: per classifier in the hierarchy's order (root first, parents before children),
    ``(name, owner node index or -1 for root, class index -> node index)``; node indices are
    positions in ``hierarchy.classes`` and ``node_ids[node index]`` is the class id. ``outside``:
    per classifier, a LUT over leaf-map values that is :data:`IGNORE` where the leaf does not lie
    under the classifier's node and 0 where it does (so ``decision | outside[leaf]`` is the mask).
    """

    classifiers: tuple[Classifier, ...]
    steps: tuple[tuple[str, int, np.ndarray], ...]
    node_ids: np.ndarray
    mask_dtype: type[np.unsignedinteger]
    outside: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, hierarchy: Hierarchy) -> DecisionRule:
        index = {c.name: i for i, c in enumerate(hierarchy.classes)}
        steps = []
        for clf in hierarchy.classifiers:
            owner = -1 if clf.node == ROOT else index[clf.node]
            steps.append((clf.name, owner, np.array([index[n] for n in clf.classes], dtype=np.int32)))
        outside = {}
        for clf in hierarchy.classifiers:
            lut = np.full(max(hierarchy.max_leaf_id, hierarchy.void_value) + 1, IGNORE, dtype=np.uint8)
            for leaf in hierarchy.descendant_leaves(clf.node):
                lut[leaf.id] = 0
            outside[clf.name] = lut
        node_ids = np.array([c.id for c in hierarchy.classes], dtype=np.int64)
        return cls(hierarchy.classifiers, tuple(steps), node_ids, hierarchy.mask_dtype, outside)

    def flatten(self, decisions: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per-classifier decisions -> leaf ids.

        Start with the root decision; wherever the chosen class owns a classifier, take
        that classifier's decision instead, down to a leaf (the IV 2018 rule: drivable ->
        L2-drivable, rider -> L2-rider, traffic sign -> L2, front -> L3, else L1).
        ``decisions`` maps every classifier name to an integer array of one shape.
        """
        missing = [c.name for c in self.classifiers if c.name not in decisions]
        if missing:
            raise ValueError(f"flatten: decisions missing for classifiers {missing}")
        current: np.ndarray | None = None
        for name, owner, lut in self.steps:
            dec = np.asarray(decisions[name])
            if dec.size and (int(dec.max()) >= len(lut) or int(dec.min()) < 0):
                raise ValueError(
                    f"flatten: classifier {name!r} has {len(lut)} classes, got decisions "
                    f"in [{int(dec.min())}, {int(dec.max())}]"
                )
            if current is None:
                current = lut[dec]
                continue
            here = current == owner
            if here.any():
                current[here] = lut[dec[here]]
        assert current is not None
        return self.node_ids[current].astype(self.mask_dtype)

    def classifier_masks(
        self,
        decisions: Mapping[str, np.ndarray],
        leaf_map: np.ndarray,
        lookup: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.take,
    ) -> dict[str, np.ndarray]:
        """Per classifier: its decision where the pixel's path goes through it, :data:`IGNORE` elsewhere.

        One LUT lookup and a bitwise OR per classifier (class indices are below IGNORE = 255, so
        OR-ing 255 sets a pixel to IGNORE and OR-ing 0 keeps it). ``lookup(lut, leaf_map)`` indexes
        the LUT; the node passes a faster one for uint8 maps (:func:`hiseg_ros.outputs.classifier_masks`).
        """
        out = {}
        for clf in self.classifiers:
            dec = np.asarray(decisions[clf.name]).astype(np.uint8, copy=False)
            if clf.node == ROOT:
                out[clf.name] = dec
                continue
            out[clf.name] = np.bitwise_or(dec, lookup(self.outside[clf.name], leaf_map))
        return out
