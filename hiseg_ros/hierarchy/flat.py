"""Flat baselines: one classifier over the leaves of another hierarchy.

A flat network is the hierarchical one with only a root classifier, so a flat baseline is made
from the hierarchy it is compared with rather than written out class by class.
"""

from __future__ import annotations

from collections.abc import Mapping

from .nodes import ROOT, ClassNode, DatasetEvaluation, DatasetMapping
from .tree import Hierarchy
from .validate import Source


def flatten_hierarchy(
    base: Hierarchy,
    name: str,
    coarse_labels: Mapping[str, str] | None = None,
    description: str = "",
    source: str = "<flattened>",
) -> Hierarchy:
    """A flat hierarchy with ``base``'s leaves under one root classifier.

    Dataset ids that ``base`` maps to an inner class have no class in a flat classifier:
    they become ignore, or the leaf named for that inner class in ``coarse_labels``.
    """
    src = Source(source)
    coarse_labels = dict(coarse_labels or {})
    leaf_names = {leaf.name for leaf in base.leaves}
    for inner, leaf in coarse_labels.items():
        if inner not in {c.name for c in base.classes} or inner in leaf_names:
            raise src.error(f"coarse_labels.{inner}", f"not an inner class of {base.name!r}")
        if leaf not in leaf_names:
            raise src.error(f"coarse_labels.{inner}", f"{leaf!r} is not a leaf of {base.name!r}")
    signs = {leaf.name for leaf in base.traffic_sign_leaves}  # a declaration on an inner class moves to its leaves
    classes = [ClassNode(leaf.name, leaf.id, ROOT, leaf.color, None, leaf.name in signs) for leaf in base.leaves]
    datasets = []
    for ds in base.datasets.values():
        ids = {}
        for native, target in ds.ids.items():
            if target is not None and target not in leaf_names:
                target = coarse_labels.get(target)
            ids[native] = target
        datasets.append(DatasetMapping(ds.name, ds.supervision, ids, ds.id_range, _flat_evaluation(base, ds)))
    return Hierarchy(name, classes, datasets, description or f"flat baseline over the leaves of {base.name}", source)


def _flat_evaluation(base: Hierarchy, ds: DatasetMapping) -> DatasetEvaluation | None:
    """Keep ``base``'s leaf -> native answers, which the flat tree can no longer derive by ancestry."""
    if ds.evaluation is None:
        return None
    leaf_native = base.leaf_to_native(ds.name)
    return DatasetEvaluation(ds.evaluation.classes, {k: v for k, v in leaf_native.items() if v is not None})
