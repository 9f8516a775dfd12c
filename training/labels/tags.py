"""Image-level tags -> pseudo ground truth: which classes are in the picture, but not where.

The IV 2019 default spreads the mass uniformly over the present tags' classes at every pixel; a
better generator (CAM, saliency, CRF; :mod:`training.labels.pseudo_labels`) localises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hiseg_ros.hierarchy import Hierarchy
from training.data.readers.base import Sample
from training.labels.node_distribution import NodeDistribution, PseudoLabelError, mapped_node


def tag_nodes(hierarchy: Hierarchy, dataset: str, tags: Sequence[str]) -> tuple[str, ...]:
    """The distinct classes of an image's tags (order of first appearance); tags mapped to ``null`` drop out."""
    ds = hierarchy.dataset(dataset)
    if ds.supervision != "tags":
        raise PseudoLabelError(f"dataset {dataset!r} has {ds.supervision!r} supervision, not image-level tags")
    nodes = (mapped_node(hierarchy, dataset, tag, "tag") for tag in tags)
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
