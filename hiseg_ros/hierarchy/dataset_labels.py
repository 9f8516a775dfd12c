"""One dataset's labels seen through the hierarchy: training targets and evaluation lookup tables.

Training goes native id -> class -> one target per classifier (:meth:`DatasetLabels.targets`);
evaluation goes the other way, leaf -> the dataset's native id -> its evaluation id
(:meth:`DatasetLabels.leaf_to_eval_lut`), so scores compare with the dataset's own benchmark.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .nodes import IGNORE, DatasetMapping, HierarchyError

if TYPE_CHECKING:
    from .tree import Hierarchy


class DatasetLabels:
    """Lookup tables of one dataset mapping under one hierarchy.

    Built by the hierarchy for each of its datasets, each table on first use; loading a hierarchy
    file resolves :meth:`leaf_to_native` right away, so an ambiguous mapping is a load error.
    """

    def __init__(self, hierarchy: Hierarchy, mapping: DatasetMapping) -> None:
        self.hierarchy = hierarchy
        self.mapping = mapping

    # ------------------------------------------------------------------ training targets
    @cached_property
    def _target_luts(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(native id is mapped, per-classifier LUT native id -> target)."""
        h, ds = self.hierarchy, self.mapping
        size = max(int(k) for k in ds.ids) + 1
        known = np.zeros(size, dtype=bool)
        luts = {clf.name: np.full(size, IGNORE, dtype=np.uint8) for clf in h.classifiers}
        for native, target in ds.ids.items():
            native = int(native)
            if native < 0:
                continue  # e.g. Cityscapes license plate -1: never stored in a label PNG
            known[native] = True
            if target is None:
                continue
            for clf_name, index in h.path(target):
                luts[clf_name][native] = index
        return known, luts

    def targets(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Per-classifier training targets (class index or :data:`IGNORE`) from a native label map.

        A native id mapped to class ``c`` gives every classifier on the root-to-``c`` path the
        index of the next class on that path; classifiers below ``c`` (when ``c`` is an inner
        class because the dataset is coarser) and beside the path get IGNORE.
        """
        ds = self.mapping
        if ds.supervision == "tags":
            raise ValueError(f"dataset {ds.name!r} has image-level tags, not per-pixel native ids")
        known, luts = self._target_luts
        label_map = np.asarray(label_map)
        if label_map.size:
            lo, hi = int(label_map.min()), int(label_map.max())
            if lo < 0 or hi >= len(known) or not known[np.unique(label_map)].all():
                bad = [int(v) for v in np.unique(label_map) if v < 0 or v >= len(known) or not known[v]]
                raise ValueError(
                    f"dataset {ds.name!r}: label ids {bad} are not mapped by hierarchy {self.hierarchy.name!r}"
                )
        return {name: lut[label_map] for name, lut in luts.items()}

    # ------------------------------------------------------------------ evaluation
    @cached_property
    def _leaf_native(self) -> dict[str, int | None] | None:
        ds = self.mapping
        if ds.evaluation is None:
            return None
        evaluated = {nid for nid, _ in ds.evaluation.classes}
        overrides = dict(ds.evaluation.leaf_ids)
        per_leaf: dict[str, int | None] = {}
        for leaf in self.hierarchy.leaves:
            if leaf.name in overrides:
                per_leaf[leaf.name] = overrides[leaf.name]
                continue
            per_leaf[leaf.name] = self._nearest_native(leaf.name, evaluated)
        return per_leaf

    def _nearest_native(self, leaf: str, evaluated: set[int]) -> int | None:
        h, ds = self.hierarchy, self.mapping
        for node in [leaf, *h.ancestors(leaf)]:
            natives = sorted(int(k) for k, v in ds.ids.items() if v == node)
            if not natives:
                continue
            preferred = [n for n in natives if n in evaluated] or natives
            if len(preferred) > 1:
                raise HierarchyError(
                    f"{h.source}: datasets.{ds.name}: leaf {leaf!r} could mean native ids {preferred} "
                    f"(all mapped to {node!r}): name one under evaluation.leaf_ids"
                )
            return preferred[0]
        return None

    def _evaluated(self) -> dict[str, int | None]:
        if self._leaf_native is None:
            raise ValueError(
                f"dataset {self.mapping.name!r} has no evaluation label space in hierarchy {self.hierarchy.name!r}"
            )
        return self._leaf_native

    def leaf_to_native(self) -> dict[str, int | None]:
        """Per leaf: the dataset's native id a prediction of that leaf means (``None``: no counterpart).

        Found at the nearest class on the leaf's ancestry that the dataset maps a native id to
        (preferring an evaluated id when several map there), unless the hierarchy file names
        one under ``evaluation.leaf_ids``.
        """
        return dict(self._evaluated())

    def leaf_to_eval_lut(self) -> np.ndarray:
        """LUT leaf id -> the dataset's evaluation id (:data:`IGNORE` where the leaf has none).

        Also covers the void value of the leaf map (maps to IGNORE).
        """
        h = self.hierarchy
        leaf_native = self._evaluated()
        assert self.mapping.evaluation is not None
        eval_of_native = {nid: i for i, (nid, _) in enumerate(self.mapping.evaluation.classes)}
        lut = np.full(max(h.max_leaf_id, h.void_value) + 1, IGNORE, dtype=np.uint8)
        for leaf in h.leaves:
            native = leaf_native[leaf.name]
            if native is not None and native in eval_of_native:
                lut[leaf.id] = eval_of_native[native]
        return lut

    def native_to_eval_lut(self) -> np.ndarray:
        """LUT native id -> evaluation id (:data:`IGNORE` for ids outside the evaluation space)."""
        self._evaluated()
        ds = self.mapping
        assert ds.evaluation is not None
        size = max(int(k) for k in ds.ids) + 1
        lut = np.full(size, IGNORE, dtype=np.uint8)
        for i, (nid, _) in enumerate(ds.evaluation.classes):
            lut[nid] = i
        return lut
