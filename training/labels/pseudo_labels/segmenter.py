"""Pseudo labels from a trained segmentation network's own decisions, constrained by the image's tags.

The attention pipeline (Grad-CAM -> saliency -> Algorithm 1 -> CRF) localises objects with a tag
classifier whose maps are a few cells wide. A network trained on the per-pixel (and box) sets
already localises every class those sets label, at its own output stride; what it cannot know is a
class only the tags teach (a truck where the per-pixel sets say only "vehicle"). This step uses the
network for *where* and the tags for *what*, walking each pixel down the hierarchy as the deployed
decision rule does (:func:`tag_constrained_labels`):

* the root: a pixel whose root decision is not on the way to one of the image's tag nodes is
  background (void in training): the tags say nothing about road or sky;
* below, at a classifier whose children include branches with tag nodes: the network's decision is
  kept when it picks such a branch and every such branch is *taught* (some per-pixel or box
  dataset labels it, so the network could have told them apart); a decision for a branch without
  a tag is re-assigned among the tagged branches (the tags name what is in the image: a "vehicle"
  pixel of an image tagged only "bus" is a bus), by the network's probabilities when every tagged
  branch is taught, else by the tag classifier's attention, one vote per connected region (the
  network never saw those classes, so its choice among them means nothing);
* only decisions for classes the tag vocabulary can name are moved: a rider where the tags know
  only "person" stays unlabelled, since its missing tag says nothing;
* a pixel already labelled by a tagged node above (a generic tag beside a specific one: "traffic
  sign" and "stop sign") keeps that label when its decision leaves the tagged branches: the generic
  tag covers the signs that are not stop signs;
* a pixel's label is the deepest tag node its walk passed through.

For classes every per-pixel set labels, the labels are the network's own decisions with the absent
classes removed; the gain of training on them is then small by construction (the synthetic sets
label every tagged class per pixel). What only the tags teach gets the network's region of the
parent class, split by the tags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional

from hiseg_ros.hierarchy import ROOT, Hierarchy
from hiseg_ros.model import normalize_tensor
from training.config_schema import reject_unknown_keys
from training.labels.targets import taught_nodes

BACKGROUND = -1
UNTAUGHT = ("vote", "attention")  # segmenter.untaught


@dataclass(frozen=True)
class SegmenterConfig:
    """``checkpoint``: a training checkpoint (``python -m training.fit.train``) for the labels'
    hierarchy; ``heights``: the network sees the image scaled to each of these heights (around its
    training scale, ``augment.base_height``) and the probabilities are averaged (multi-scale
    inference: small objects gain from the larger scales, large ones from the smaller)."""

    checkpoint: str = ""
    heights: tuple[int, ...] = (512,)
    untaught: str = "vote"  # classes no per-pixel set teaches: "vote" | "attention" (GeneratorConfig)

    def __post_init__(self) -> None:
        heights = (self.heights,) if isinstance(self.heights, int) else tuple(self.heights)
        if not heights or not all(isinstance(h, int) and h >= 16 for h in heights):
            raise ValueError(f"segmenter.height: expected an integer >= 16 or a list of them, got {self.heights!r}")
        object.__setattr__(self, "heights", heights)
        if self.untaught not in UNTAUGHT:
            raise ValueError(f"segmenter.untaught: expected one of {list(UNTAUGHT)}, got {self.untaught!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmenterConfig:
        reject_unknown_keys("segmenter", data, ("checkpoint", "height", "untaught"))
        checkpoint = data.get("checkpoint", "")
        if not isinstance(checkpoint, str):
            raise ValueError(f"segmenter.checkpoint: expected a checkpoint path, got {checkpoint!r}")
        height = data.get("height", 512)
        heights = tuple(height) if isinstance(height, list | tuple) else height
        return cls(checkpoint, heights, data.get("untaught", "vote"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``untaught`` only when not the default, so older label folders resume)."""
        height = self.heights[0] if len(self.heights) == 1 else list(self.heights)
        extra = {} if self.untaught == "vote" else {"untaught": self.untaught}
        return {"checkpoint": self.checkpoint, "height": height, **extra}


@dataclass(frozen=True)
class NoTagClassifier:
    """Stands in for the tag classifier when the segmenter needs none: every tag class is taught by a
    per-pixel or box set (:func:`check_classifier_needed` made sure of it)."""

    def attention(self, image: np.ndarray, nodes: Any, out_size: tuple[int, int]) -> np.ndarray:
        raise ValueError(f"attention for {list(nodes)} needs a tag classifier (give --classifier)")


def check_classifier_needed(
    classifier: str, segmenter: SegmenterConfig | None, hierarchy: Hierarchy, dataset: str
) -> None:
    """Without a tag ``classifier`` checkpoint only the segmenter (its config, when the stage is on)
    works, and only if no tag class of ``dataset`` is untaught and ``untaught`` is not "attention"
    (both need the attention); ValueError naming what needs it otherwise."""
    if classifier:
        return
    if segmenter is None:
        raise ValueError("classifier: a tag classifier checkpoint is needed (train one with `train-classifier`)")
    from training.labels.pseudo_labels.classifier import tag_node_space

    untaught = [n for n in tag_node_space(hierarchy, dataset) if n not in taught_nodes(hierarchy)]
    if untaught or segmenter.untaught == "attention":
        raise ValueError(
            f"classifier: the segmenter stage needs the tag classifier for {untaught or 'its attention stages'} "
            "(no per-pixel or box set teaches them); give --classifier"
        )


def taggable_nodes(hierarchy: Hierarchy, dataset: str) -> frozenset[str]:
    """The nodes ``dataset``'s tags can name, with their ancestors."""
    from training.labels.pseudo_labels.classifier import tag_node_space

    named = set(tag_node_space(hierarchy, dataset))
    return frozenset(named | {a for n in named for a in hierarchy.ancestors(n)})


def tag_constrained_labels(
    hierarchy: Hierarchy,
    probabilities: Mapping[str, np.ndarray],
    tagged: Sequence[str],
    taught: frozenset[str],
    attention: Callable[[], np.ndarray] | None = None,
    complete: bool = True,
    taggable: frozenset[str] | None = None,
) -> np.ndarray:
    """``h x w`` int32 indices into ``tagged`` (``-1`` = background) from the network's per-classifier
    probabilities (``C x h x w`` each); ``attention()`` gives ``len(tagged) x h x w`` maps, asked for
    only when an untaught branch must be told apart (module docstring). ``complete=False``: the
    tags need not name every class present, so nothing is re-assigned: the network's decisions,
    labelled with the deepest tag node on their path (what the network says alone). ``taggable``:
    the nodes the dataset's tags can name (with their ancestors; None: all): a decision for a class
    the tag vocabulary cannot name (a rider, where the tags know only "person") is not re-assigned,
    since its missing tag says nothing."""
    shape = next(iter(probabilities.values())).shape[1:]
    names = [ROOT, *(c.name for c in hierarchy.classes)]
    code = {n: i for i, n in enumerate(names)}
    tag_index = {n: i for i, n in enumerate(tagged)}
    below: dict[str, set[str]] = {n: set() for n in names}  # node -> tag nodes strictly under it
    for t in tagged:
        for a in [*hierarchy.ancestors(t), ROOT]:
            below[a].add(t)
    current = np.zeros(shape, np.int32)  # node code per pixel, starting at the root
    labels = np.full(shape, BACKGROUND, np.int32)
    maps: list[np.ndarray] = []  # attention, computed once if needed
    for clf in hierarchy.classifiers:  # breadth first: a pixel reaches a classifier after its parent's
        here = current == code[clf.node]
        if not below[clf.node] or not here.any():
            continue
        branches = [k for k, c in enumerate(clf.classes) if c in tag_index or below[c]]
        probs = probabilities[clf.name]
        decided = probs.argmax(0)
        on_branch = np.isin(decided, branches)
        chosen = np.full(shape, -1, np.int64)
        if clf.node == ROOT or not complete:  # off the tagged branches: background at the root
            chosen[here & on_branch] = decided[here & on_branch]
        elif all(clf.classes[k] in taught for k in branches):
            chosen[here & on_branch] = decided[here & on_branch]
            # off the tagged branches: re-assigned, unless a tagged node above already labels the
            # pixel (a generic tag such as "traffic sign" covers the signs that are not stop signs)
            moved = here & ~on_branch & (labels == BACKGROUND)
            if taggable is not None:
                nameable = [k for k, c in enumerate(clf.classes) if c in taggable]
                moved &= np.isin(decided, nameable)
            if moved.any():
                restricted = probs[branches].argmax(0)
                chosen[moved] = np.asarray(branches)[restricted[moved]]
        else:
            if not maps:
                if attention is None:
                    raise ValueError(f"classifier {clf.name!r}: untaught tagged classes need the attention maps")
                maps.append(np.asarray(attention(), np.float32))
            chosen[here] = _vote(here, clf.classes, branches, tagged, hierarchy, maps[0])
        for k in branches:
            child = clf.classes[k]
            go = chosen == k
            current[go] = code[child]
            if child in tag_index:
                labels[go] = tag_index[child]
    return labels


def _vote(
    here: np.ndarray,
    classes: Sequence[str],
    branches: Sequence[int],
    tagged: Sequence[str],
    hierarchy: Hierarchy,
    maps: np.ndarray,
) -> np.ndarray:
    """Per connected region of ``here``: the tagged branch with the highest mean attention (a branch's
    map: the maximum over its tag nodes), as the class index per pixel of ``here``."""
    branch_maps = []
    for k in branches:
        child = classes[k]
        rows = [i for i, t in enumerate(tagged) if t == child or child in hierarchy.ancestors(t)]
        branch_maps.append(maps[rows].max(axis=0))
    stacked = np.stack(branch_maps)  # B x h x w
    count, regions = cv2.connectedComponents(here.astype(np.uint8), connectivity=8)
    flat = regions.ravel()
    sums = np.stack([np.bincount(flat, weights=m.ravel(), minlength=count) for m in stacked])  # B x regions
    winner = np.asarray(branches)[sums.argmax(0)]
    return winner[regions[here]]


class Segmenter:
    """A trained network's per-classifier probabilities at any size (CPU, float32, eval mode)."""

    def __init__(self, config: SegmenterConfig, hierarchy: Hierarchy) -> None:
        from hiseg_ros.engines.checkpoint import load_checkpoint

        loaded = load_checkpoint(config.checkpoint)
        if loaded.hierarchy.to_dict()["classes"] != hierarchy.to_dict()["classes"]:
            raise ValueError(
                f"segmenter.checkpoint {config.checkpoint}: trained for hierarchy {loaded.hierarchy.name!r}, "
                f"whose classes differ from {hierarchy.name!r} (the labels' hierarchy)"
            )
        self.config = config
        self.net = loaded.net.eval()
        self.taught = taught_nodes(hierarchy)

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray, out_size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Softmax per classifier, ``C x H x W`` at ``out_size``, of ``image`` (RGB uint8), averaged over
        the configured heights."""
        total: dict[str, torch.Tensor] = {}
        for height in self.config.heights:
            h, w = image.shape[:2]
            width = max(16, round(w * height / h))
            resample = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
            scaled = cv2.resize(image, (width, height), interpolation=resample)
            x = normalize_tensor(torch.from_numpy(np.ascontiguousarray(scaled))[None], channels_last=True)
            for name, v in self.net(x).items():
                up = functional.interpolate(v, size=out_size, mode="bilinear", align_corners=False)
                p = functional.softmax(up, dim=1)[0]
                total[name] = p if name not in total else total[name] + p
        return {name: (p / len(self.config.heights)).numpy() for name, p in total.items()}
