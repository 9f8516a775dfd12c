"""The :class:`Hierarchy`: a validated class tree with its classifiers, dataset mappings and lookup tables.

The class owns the tree structure (classes, classifiers, paths, ancestry) and hands the per-pixel
work to one table object per concept, each built on first use: :class:`DecisionRule` (decisions
-> leaf map, classifier masks) and one :class:`DatasetLabels` per dataset (training targets,
evaluation lookup tables). JSON goes through :mod:`.json_document`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from . import json_document
from .dataset_labels import DatasetLabels
from .decision_rule import DecisionRule
from .nodes import IGNORE, ROOT, Classifier, ClassNode, DatasetMapping
from .validate import parse_document


class Hierarchy:
    """A validated class tree with its classifiers, dataset mappings and lookup tables.

    Build it with :func:`~hiseg_ros.hierarchy.load_hierarchy` (YAML) or :meth:`from_json` (model
    metadata); a hand-built one (as :func:`~hiseg_ros.hierarchy.flatten_hierarchy` makes) must
    come from already validated parts.
    """

    def __init__(
        self,
        name: str,
        classes: Sequence[ClassNode],
        datasets: Sequence[DatasetMapping] = (),
        description: str = "",
        source: str = "<hierarchy>",
    ) -> None:
        self.name = name
        self.description = description
        self.source = source
        self.classes: tuple[ClassNode, ...] = tuple(classes)
        self.datasets: dict[str, DatasetMapping] = {d.name: d for d in datasets}
        self._by_name: dict[str, ClassNode] = {c.name: c for c in self.classes}
        self.classifiers: tuple[Classifier, ...] = _build_classifiers(self.classes)
        self._classifier_by_name = {c.name: c for c in self.classifiers}

    # ------------------------------------------------------------------ structure
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (
            f"Hierarchy({self.name!r}, {len(self.classes)} classes, {len(self.leaves)} leaves, "
            f"classifiers={[c.name for c in self.classifiers]})"
        )

    def node(self, name: str) -> ClassNode:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"hierarchy {self.name!r} has no class {name!r}") from None

    def classifier(self, name: str) -> Classifier:
        try:
            return self._classifier_by_name[name]
        except KeyError:
            raise KeyError(f"hierarchy {self.name!r} has no classifier {name!r}") from None

    @property
    def classifier_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classifiers)

    @property
    def classifier_sizes(self) -> list[tuple[str, int]]:
        """(name, number of classes) per classifier, root first: what the network is built from."""
        return [(c.name, c.num_classes) for c in self.classifiers]

    @cached_property
    def leaves(self) -> tuple[ClassNode, ...]:
        return tuple(c for c in self.classes if c.classifier is None)

    @cached_property
    def max_leaf_id(self) -> int:
        return max(c.id for c in self.leaves)

    @property
    def mask_dtype(self) -> type[np.unsignedinteger]:
        """dtype of the flattened leaf map: uint8 while every leaf id fits below :data:`IGNORE`."""
        return np.uint8 if self.max_leaf_id < IGNORE else np.uint16

    @property
    def void_value(self) -> int:
        """Value of "no class" in the flattened leaf map (255, or 65535 for uint16 maps)."""
        return IGNORE if self.mask_dtype is np.uint8 else 65535

    def ancestors(self, name: str) -> list[str]:
        """Names from ``name``'s parent up to (excluding) root."""
        chain = []
        parent = self.node(name).parent
        while parent != ROOT:
            chain.append(parent)
            parent = self._by_name[parent].parent
        return chain

    def path(self, name: str) -> list[tuple[str, int]]:
        """(classifier, class index) decisions that lead from the root to class ``name``."""
        steps = []
        current = name
        while current != ROOT:
            parent = self._by_name[current].parent
            clf = self.classifier_of_node(parent)
            steps.append((clf.name, clf.classes.index(current)))
            current = parent
        return steps[::-1]

    def classifier_of_node(self, node_name: str) -> Classifier:
        for clf in self.classifiers:
            if clf.node == node_name:
                return clf
        raise KeyError(f"class {node_name!r} of hierarchy {self.name!r} owns no classifier")

    def descendant_leaves(self, node_name: str) -> list[ClassNode]:
        return [leaf for leaf in self.leaves if node_name == ROOT or node_name in self.ancestors(leaf.name)]

    @cached_property
    def traffic_sign_classes(self) -> tuple[str, ...]:
        """Classes the file declares ``traffic_sign: true`` (the node's ``~/traffic_signs`` source)."""
        return tuple(c.name for c in self.classes if c.traffic_sign)

    @cached_property
    def traffic_sign_leaves(self) -> tuple[ClassNode, ...]:
        """Leaves that are traffic signs: declared themselves, or under a declared class."""
        declared = set(self.traffic_sign_classes)
        return tuple(
            leaf for leaf in self.leaves if leaf.name in declared or declared.intersection(self.ancestors(leaf.name))
        )

    @cached_property
    def palette(self) -> np.ndarray:
        """LUT leaf id (and void) -> RGB colour, for colour masks."""
        lut = np.zeros((max(self.max_leaf_id, self.void_value) + 1, 3), dtype=np.uint8)
        for leaf in self.leaves:
            lut[leaf.id] = leaf.color
        return lut

    # ------------------------------------------------------------------ decision rule
    @cached_property
    def _decision_rule(self) -> DecisionRule:
        return DecisionRule.of(self)

    def flatten(self, decisions: Mapping[str, np.ndarray]) -> np.ndarray:
        """The decision rule, per-classifier decisions -> leaf ids (:meth:`DecisionRule.flatten`).

        The node calls it on every frame; the tables are built once per hierarchy.
        """
        return self._decision_rule.flatten(decisions)

    def classifier_masks(
        self,
        decisions: Mapping[str, np.ndarray],
        leaf_map: np.ndarray,
        lookup: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.take,
    ) -> dict[str, np.ndarray]:
        """Per classifier: its decision where the pixel's path goes through it, :data:`IGNORE` elsewhere.

        See :meth:`DecisionRule.classifier_masks` (``lookup`` indexes the LUTs).
        """
        return self._decision_rule.classifier_masks(decisions, leaf_map, lookup)

    # ------------------------------------------------------------------ datasets
    def dataset(self, name: str) -> DatasetMapping:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(
                f"hierarchy {self.name!r} has no dataset {name!r} (known: {sorted(self.datasets)})"
            ) from None

    @cached_property
    def _dataset_labels(self) -> dict[str, DatasetLabels]:
        return {name: DatasetLabels(self, ds) for name, ds in self.datasets.items()}

    def _labels(self, dataset: str) -> DatasetLabels:
        self.dataset(dataset)  # unknown name: the KeyError that lists the known ones
        return self._dataset_labels[dataset]

    def targets(self, dataset: str, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Per-classifier training targets from a native label map (:meth:`DatasetLabels.targets`)."""
        return self._labels(dataset).targets(label_map)

    def leaf_to_native(self, dataset: str) -> dict[str, int | None]:
        """Per leaf: the dataset's native id a prediction of that leaf means (:meth:`DatasetLabels.leaf_to_native`)."""
        return self._labels(dataset).leaf_to_native()

    def leaf_to_eval_lut(self, dataset: str) -> np.ndarray:
        """LUT leaf id (and void) -> the dataset's evaluation id, :data:`IGNORE` where the leaf has none."""
        return self._labels(dataset).leaf_to_eval_lut()

    def native_to_eval_lut(self, dataset: str) -> np.ndarray:
        """LUT native id -> evaluation id (:data:`IGNORE` for ids outside the evaluation space)."""
        return self._labels(dataset).native_to_eval_lut()

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return json_document.hierarchy_to_dict(self)

    def to_json(self) -> str:
        """Compact JSON (embedded in exported models); :meth:`from_json` gives back an equal hierarchy."""
        return json_document.hierarchy_to_json(self)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<hierarchy json>") -> Hierarchy:
        return hierarchy_from_dict(json_document.document_body(text, source), source)


def hierarchy_from_dict(data: Mapping[str, Any], source: str) -> Hierarchy:
    """Validate a parsed hierarchy document (YAML or JSON) and build the :class:`Hierarchy`."""
    name, classes, datasets, description = parse_document(data, source)
    hierarchy = Hierarchy(name, classes, datasets, description, source)
    for labels in hierarchy._dataset_labels.values():
        if labels.mapping.evaluation is not None:
            labels.leaf_to_native()  # resolve leaf -> native answers now: ambiguities are load errors
    return hierarchy


def _build_classifiers(classes: Sequence[ClassNode]) -> tuple[Classifier, ...]:
    """Classifiers in breadth-first order (root first, parents before children)."""
    children: dict[str, list[str]] = {}
    for node in classes:
        children.setdefault(node.parent, []).append(node.name)
    by_name = {c.name: c for c in classes}
    out = []
    queue = [ROOT]
    while queue:
        node = queue.pop(0)
        kids = children.get(node, [])
        if not kids:
            continue
        out.append(Classifier(ROOT if node == ROOT else by_name[node].classifier or node, node, tuple(kids)))
        queue.extend(kids)
    return tuple(out)
