"""The semantic hierarchy: parsed once from YAML, it drives training, export and the node.

A hierarchy is a tree of classes under an implicit ``root``. Every class with children
owns a classifier over those children (the root classifier over the root's children),
so a flat hierarchy is simply one whose classes all hang from ``root``. Datasets map
their native label ids onto classes of the tree: onto a leaf, or onto an inner class
when the dataset is coarser than the tree (Cityscapes "road" -> ``drivable``), or onto
``null`` (ignore).

Everything per pixel is done with lookup tables (numpy fancy indexing), never with
Python loops over pixels: the node calls :meth:`Hierarchy.flatten` on every frame.

Modules: :mod:`.nodes` (the records and constants), :mod:`.validate` (document checks),
:mod:`.tree` (:class:`Hierarchy`), :mod:`.decision_rule` (decisions -> leaf map, classifier
masks), :mod:`.dataset_labels` (training targets, evaluation tables), :mod:`.json_document`
(the JSON embedded in models), :mod:`.flat` (flat baselines), :mod:`.load` (YAML files).
"""

from .dataset_labels import DatasetLabels
from .decision_rule import DecisionRule
from .flat import flatten_hierarchy
from .load import load_hierarchy
from .nodes import (
    IGNORE,
    ROOT,
    SUPERVISION_KINDS,
    Classifier,
    ClassNode,
    DatasetEvaluation,
    DatasetMapping,
    HierarchyError,
)
from .tree import Hierarchy, hierarchy_from_dict

__all__ = [
    "IGNORE",
    "ROOT",
    "SUPERVISION_KINDS",
    "ClassNode",
    "Classifier",
    "DatasetEvaluation",
    "DatasetLabels",
    "DatasetMapping",
    "DecisionRule",
    "Hierarchy",
    "HierarchyError",
    "flatten_hierarchy",
    "hierarchy_from_dict",
    "load_hierarchy",
]
