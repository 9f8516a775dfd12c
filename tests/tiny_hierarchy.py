"""The tiny hierarchy of the loss and target tests: small enough to compute losses by hand.

root: road | sign | vehicle;  sign: front | back;  front: stop | yield;  vehicle: car | bus;
one dataset per supervision kind (px: pixel, bx: boxes, tg: tags).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hiseg_ros.hierarchy import Hierarchy, load_hierarchy

TINY_YAML = """name: tiny
classes:
  - {name: road, id: 0, parent: root, color: [1, 1, 1]}
  - {name: sign, id: 1, parent: root, color: [2, 2, 2]}
  - {name: vehicle, id: 2, parent: root, color: [3, 3, 3]}
  - {name: front, id: 3, parent: sign, color: [4, 4, 4]}
  - {name: back, id: 4, parent: sign, color: [5, 5, 5]}
  - {name: stop, id: 5, parent: front, color: [6, 6, 6]}
  - {name: yield, id: 6, parent: front, color: [7, 7, 7]}
  - {name: car, id: 7, parent: vehicle, color: [8, 8, 8]}
  - {name: bus, id: 8, parent: vehicle, color: [9, 9, 9]}
datasets:
  px:
    supervision: pixel
    ids: {0: road, 1: sign, 2: front, 3: back, 4: stop, 5: car, 6: vehicle, 7: null}
  bx:
    supervision: boxes
    ids: {0: stop, 1: yield, 2: car, 3: front, 4: null, 5: bus}
  tg:
    supervision: tags
    ids: {stop sign: stop, give way: yield, car: car, bus: bus, sign: sign, vehicle: vehicle, cat: null}
"""


def load_tiny(folder: Path) -> Hierarchy:
    """Write the tiny hierarchy into ``folder`` and load it with the project's real parser."""
    path = folder / "tiny.yaml"
    path.write_text(TINY_YAML)
    return load_hierarchy(path)


class FixedLogits(torch.nn.Module):
    """A "network" that outputs hand-made logits whatever the image (for the deployed decision graph)."""

    def __init__(self, hierarchy: Hierarchy, logits: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.classifier_names = hierarchy.classifier_names
        self.num_classes = dict(hierarchy.classifier_sizes)
        self.logits = logits

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.logits
