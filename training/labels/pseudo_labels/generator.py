"""Pseudo-label generators for the training seam (:class:`training.labels.node_distribution.PseudoLabelGenerator`).

* :class:`WeakLabelGenerator`: tags -> Grad-CAM -> (+ saliency, + erasing) -> Algorithm 1 (+ CRF),
  computed on the fly; or, with the ``segmenter`` stage, a trained segmentation network's own
  decisions constrained by the tags (:mod:`~training.labels.pseudo_labels.segmenter`). Output is
  mass over *hierarchy nodes* (the nodes the image's tags map to); background is void (``-1``):
  image-level data never teaches the root classifier, and the sub-classifiers only learn where the
  network's own root decision agrees, so "not an object" needs no node. ``output="hard"``: one-hot
  labels; ``"soft"``: at every labelled pixel the combined map ``M`` renormalised over the image's
  classes.
* :class:`PrecomputedLabels`: reads the files written by ``python -m training.labels.pseudo_labels
  generate`` (hard: PNG of hierarchy class ids, void = the hierarchy's void value; soft: ``.npz``
  palette). A missing file is an error, never an empty label.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from hiseg_ros.hierarchy import Hierarchy, load_hierarchy
from training.config_schema import reject_unknown_keys
from training.data.readers.base import Sample
from training.labels.node_distribution import NodeDistribution, PseudoLabelError
from training.labels.pseudo_labels.algorithm1 import (
    BACKGROUND,
    Algorithm1Config,
    algorithm1,
    cam_only_labels,
    combined_map,
)
from training.labels.pseudo_labels.attention_decoder import AttentionDecoder
from training.labels.pseudo_labels.classifier import (
    RetargetedClassifier,
    TagClassifier,
    classifier_for_hierarchy,
    hierarchy_tags,
    load_classifier,
)
from training.labels.pseudo_labels.crf import CRFConfig, crf_refine
from training.labels.pseudo_labels.erasing import ErasingConfig, iterative_saliency
from training.labels.pseudo_labels.regions import (
    RegionConfig,
    component_classes,
    diffuse_classes,
    region_mean,
    region_vote,
    superpixels,
)
from training.labels.pseudo_labels.saliency import SALIENCY_SOURCES, SaliencySource
from training.labels.pseudo_labels.segmenter import (
    NoTagClassifier,
    Segmenter,
    SegmenterConfig,
    check_classifier_needed,
    tag_constrained_labels,
    taggable_nodes,
)
from training.labels.pseudo_labels.stages import STAGES
from training.labels.tags import tag_nodes

Output = Literal["hard", "soft"]
DECODER_UNSEEN = ("decoder", "attention")  # decoder.unseen: what nodes the decoder was not trained on get
_TOP_KEYS = {
    "classifier",
    "classifier_hierarchy",
    "saliency",
    "stages",
    "algorithm1",
    "erasing",
    "crf",
    "regions",
    "decoder",
    "segmenter",
    "nodes",
    "output",
    "work_max_side",
}


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that determines a pseudo label; recorded next to precomputed labels.

    ``stages``: ``saliency`` off = the "CAM only" ablation (background where ``max A < gamma1``);
    ``erasing`` / ``crf`` need ``saliency``. ``regions`` (off by default): classes per region
    (:mod:`~training.labels.pseudo_labels.regions`; ``regions_config.mode`` ``maps``, the default:
    maps averaged per superpixel before Algorithm 1 / the CRF; ``vote``: each superpixel's majority
    label after them; ``components``: one class per connected foreground region after them).
    ``decoder`` (off by default): the Grad-CAM maps go through the class-conditioned attention
    decoder (:mod:`~training.labels.pseudo_labels.attention_decoder`, checkpoint ``decoder_checkpoint``)
    and its mask probabilities replace them for every later step; ``decoder_unseen="attention"``
    keeps the Grad-CAM map for nodes the decoder was not trained on (it does not transfer well to
    classes unlike the ones it saw).
    ``segmenter`` (off by default): a trained network (``segmenter_config``) says where, the tags what
    (:mod:`~training.labels.pseudo_labels.segmenter`); hard labels. Classes no per-pixel set teaches:
    ``untaught="vote"`` (default; the attention stages off) splits the network's region of their
    parent by attention, ``"attention"`` takes the attention pipeline's labels wherever it names one
    (it also finds objects the network's root misses, a tram it calls building).
    ``nodes`` (default: all): label only these nodes; pixels of the image's other tag classes become
    void, so a tag set teaches only what the per-pixel sets cannot (their classes keep per-pixel
    targets alone instead of also getting noisy pseudo labels).
    ``work_max_side``: the pipeline runs with the image's longer side scaled to this (labels are
    upsampled, nearest, to the full image).
    ``classifier_hierarchy``: the hierarchy the tag classifier was trained with, for checkpoints that
    record no tag map, when labels are made for another hierarchy (outputs matched through the tags).
    """

    classifier: str = ""
    classifier_hierarchy: str | None = None
    saliency_source: str = "learned"
    saliency_checkpoint: str | None = None
    saliency: bool = True
    erasing: bool = True
    crf: bool = True
    regions: bool = False
    decoder: bool = False
    decoder_checkpoint: str | None = None
    decoder_unseen: str = "decoder"
    segmenter: bool = False
    segmenter_config: SegmenterConfig = field(default_factory=SegmenterConfig)
    nodes: tuple[str, ...] | None = None
    algorithm1: Algorithm1Config = field(default_factory=Algorithm1Config)
    erasing_config: ErasingConfig = field(default_factory=ErasingConfig)
    crf_config: CRFConfig = field(default_factory=CRFConfig)
    regions_config: RegionConfig = field(default_factory=RegionConfig)
    output: Output = "hard"
    work_max_side: int = 320

    def __post_init__(self) -> None:
        if self.output not in ("hard", "soft"):
            raise ValueError(f"output: expected 'hard' or 'soft', got {self.output!r}")
        if not isinstance(self.work_max_side, int) or self.work_max_side < 16:
            raise ValueError(f"work_max_side: expected an integer >= 16, got {self.work_max_side!r}")
        if self.saliency and self.saliency_source not in SALIENCY_SOURCES:
            raise ValueError(f"saliency.source: expected one of {list(SALIENCY_SOURCES)}, got {self.saliency_source!r}")
        if (self.erasing or self.crf) and not self.saliency:
            raise ValueError("stages: 'erasing' and 'crf' need 'saliency' (Algorithm 1 combines it with attention)")
        if self.decoder_unseen not in DECODER_UNSEEN:
            raise ValueError(f"decoder.unseen: expected one of {list(DECODER_UNSEEN)}, got {self.decoder_unseen!r}")
        if self.decoder and not self.decoder_checkpoint:
            raise ValueError("stages.decoder: needs decoder.checkpoint (train one with `train-decoder`)")
        if self.segmenter:
            on = [s for s in ("saliency", "erasing", "crf", "regions", "decoder") if getattr(self, s)]
            if on and self.segmenter_config.untaught == "vote":
                raise ValueError(
                    f"stages.segmenter: with segmenter.untaught 'vote' it replaces Algorithm 1 and what follows "
                    f"it; turn off {on} (or set segmenter.untaught: attention)"
                )
            if not self.segmenter_config.checkpoint:
                raise ValueError("stages.segmenter: needs segmenter.checkpoint (a training checkpoint)")
            if self.output != "hard":
                raise ValueError("stages.segmenter: writes hard labels (output: hard)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratorConfig:
        """Parse the nested form of :meth:`to_dict` (unknown keys are errors naming the key)."""
        reject_unknown_keys("", data, sorted(_TOP_KEYS))
        sal = dict(data.get("saliency") or {})
        reject_unknown_keys("saliency", sal, ("source", "checkpoint"))
        stages = dict(data.get("stages") or {})
        reject_unknown_keys("stages", stages, STAGES)
        for key, value in stages.items():
            if not isinstance(value, bool):
                raise ValueError(f"stages.{key}: expected true or false, got {value!r}")
        dec = dict(data.get("decoder") or {})
        reject_unknown_keys("decoder", dec, ("checkpoint", "unseen"))
        classifier = data.get("classifier", "")
        if not isinstance(classifier, str):
            raise ValueError(f"classifier: expected a checkpoint path, got {classifier!r}")
        classifier_hierarchy = data.get("classifier_hierarchy")
        if classifier_hierarchy is not None and not isinstance(classifier_hierarchy, str):
            raise ValueError(f"classifier_hierarchy: expected a hierarchy YAML path, got {classifier_hierarchy!r}")
        nodes = data.get("nodes")
        if nodes is not None and (not isinstance(nodes, list | tuple) or not all(isinstance(n, str) for n in nodes)):
            raise ValueError(f"nodes: expected a list of hierarchy node names, got {nodes!r}")
        return cls(
            nodes=None if nodes is None else tuple(nodes),
            classifier=classifier,
            classifier_hierarchy=classifier_hierarchy,
            saliency_source=sal.get("source", "learned"),
            saliency_checkpoint=sal.get("checkpoint"),
            saliency=stages.get("saliency", True),
            erasing=stages.get("erasing", True),
            crf=stages.get("crf", True),
            regions=stages.get("regions", False),
            decoder=stages.get("decoder", False),
            decoder_checkpoint=dec.get("checkpoint"),
            decoder_unseen=dec.get("unseen", "decoder"),
            segmenter=stages.get("segmenter", False),
            segmenter_config=SegmenterConfig.from_dict(data.get("segmenter") or {}),
            algorithm1=Algorithm1Config.from_dict(data.get("algorithm1") or {}),
            erasing_config=ErasingConfig.from_dict(data.get("erasing") or {}),
            crf_config=CRFConfig.from_dict(data.get("crf") or {}),
            regions_config=RegionConfig.from_dict(data.get("regions") or {}),
            output=data.get("output", "hard"),
            work_max_side=data.get("work_max_side", 320),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested settings (round-trips through :meth:`from_dict`).

        ``classifier_hierarchy`` and the ``regions`` / ``decoder`` stages (with their settings) appear
        only when set, so folders written before they existed still compare equal on a resumed run.
        """
        extra = {} if self.classifier_hierarchy is None else {"classifier_hierarchy": self.classifier_hierarchy}
        stages = {"saliency": self.saliency, "erasing": self.erasing, "crf": self.crf}
        regions = {"regions": self.regions_config.to_dict()} if self.regions else {}
        unseen = {} if self.decoder_unseen == "decoder" else {"unseen": self.decoder_unseen}
        decoder = {"decoder": {"checkpoint": self.decoder_checkpoint, **unseen}} if self.decoder else {}
        segmenter = {"segmenter": self.segmenter_config.to_dict()} if self.segmenter else {}
        return {
            "classifier": self.classifier,
            **extra,
            "saliency": {"source": self.saliency_source, "checkpoint": self.saliency_checkpoint},
            "stages": stages
            | ({"regions": True} if self.regions else {})
            | ({"decoder": True} if self.decoder else {})
            | ({"segmenter": True} if self.segmenter else {}),
            "algorithm1": {"gamma1": self.algorithm1.gamma1, "gamma2": self.algorithm1.gamma2},
            "erasing": {"thresholds": list(self.erasing_config.thresholds)},
            "crf": dict(vars(self.crf_config)),
            **regions,
            **decoder,
            **segmenter,
            **({} if self.nodes is None else {"nodes": list(self.nodes)}),
            "output": self.output,
            "work_max_side": self.work_max_side,
        }


def work_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(H, W) with the longer side scaled to ``max_side`` (never enlarged)."""
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    return (max(1, round(h * scale)), max(1, round(w * scale)))


def load_tag_classifier(
    config: GeneratorConfig, hierarchy: Hierarchy, dataset: str
) -> TagClassifier | RetargetedClassifier | NoTagClassifier:
    """The configured tag classifier, answering for ``hierarchy``'s nodes (ValueError if it cannot);
    :class:`NoTagClassifier` when none is configured and none is needed."""
    segmenter = config.segmenter_config if config.segmenter else None
    check_classifier_needed(config.classifier, segmenter, hierarchy, dataset)
    if not config.classifier:
        return NoTagClassifier()
    classifier = load_classifier(config.classifier)
    tags = None
    if config.classifier_hierarchy is not None:
        tags = hierarchy_tags(load_hierarchy(config.classifier_hierarchy), dataset)
    return classifier_for_hierarchy(classifier, hierarchy, dataset, tags)


@dataclass
class WeakLabelGenerator:
    """On-the-fly Xu et al. pseudo labels; ``timings`` accumulates seconds per stage."""

    hierarchy: Hierarchy
    classifier: TagClassifier | RetargetedClassifier | NoTagClassifier
    saliency: SaliencySource | None
    config: GeneratorConfig = field(default_factory=GeneratorConfig)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    decoder: AttentionDecoder | None = None
    segmenter: Segmenter | None = None

    def __post_init__(self) -> None:
        if self.config.saliency and self.saliency is None:
            raise ValueError("WeakLabelGenerator: stages.saliency is on but no saliency source was given")
        if self.config.decoder and self.decoder is None:
            raise ValueError("WeakLabelGenerator: stages.decoder is on but no attention decoder was given")
        if self.config.segmenter and self.segmenter is None:
            raise ValueError("WeakLabelGenerator: stages.segmenter is on but no segmenter was given")
        known = {c.name for c in self.hierarchy.classes}
        for name in self.config.nodes or ():
            if name not in known:
                raise ValueError(f"nodes: {name!r} is not a node of hierarchy {self.hierarchy.name!r}")

    def _tick(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - start
        return now

    def maps(self, sample: Sample) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None, np.ndarray]:
        """(nodes, attention ``C x h x w``, saliency ``h x w`` or None, labels ``h x w``) at work size;
        labels of nodes outside ``config.nodes`` (when set) are background (void for training)."""
        nodes, cams, sal, labels = self._maps(sample)
        if self.config.nodes is not None and nodes:
            dropped = [i for i, n in enumerate(nodes) if n not in self.config.nodes]
            labels = np.where(np.isin(labels, dropped), BACKGROUND, labels)
        return nodes, cams, sal, labels

    def _maps(self, sample: Sample) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None, np.ndarray]:
        """(nodes, attention ``C x h x w``, saliency ``h x w`` or None, labels ``h x w``) at work size.

        Raises :class:`PseudoLabelError` for an empty image or tags the hierarchy does not know;
        an image without usable tags gives no nodes and all-background labels.
        """
        image = sample.image
        if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            shape = None if image is None else image.shape
            raise PseudoLabelError(f"dataset {sample.dataset!r} sample {sample.sample_id!r}: empty image {shape}")
        nodes = tag_nodes(self.hierarchy, sample.dataset, sample.tags)
        t = time.perf_counter()
        size = work_size(image.shape[:2], self.config.work_max_side)
        small = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        t = self._tick("resize", t)
        if not nodes:
            return nodes, np.zeros((0, *size), np.float32), None, np.full(size, BACKGROUND, np.int32)
        if self.config.segmenter and self.config.segmenter_config.untaught == "vote":
            return self._segmenter_maps(sample.dataset, image, small, nodes, size, t)
        found = self._attention_maps(small, nodes, size, t)
        if not self.config.segmenter:
            return found
        # segmenter.untaught "attention": the network's labels, but the attention pipeline's where it
        # names a class no per-pixel set teaches
        _, cams, sal, attended = found
        _, _, _, labels = self._segmenter_maps(sample.dataset, image, small, nodes, size, time.perf_counter(), cams)
        assert self.segmenter is not None
        untaught = [i for i, n in enumerate(nodes) if n not in self.segmenter.taught]
        return nodes, cams, sal, np.where(np.isin(attended, untaught), attended, labels)

    def _attention_maps(
        self, small: np.ndarray, nodes: tuple[str, ...], size: tuple[int, int], t: float
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None, np.ndarray]:
        """The attention pipeline: Grad-CAM (+ decoder) -> (+ regions) -> (saliency, erasing) -> Algorithm 1 / CRF."""
        cams = self.classifier.attention(small, nodes, size)
        t = self._tick("gradcam", t)
        if self.config.decoder:  # the class masks the decoder draws from the attention replace it
            assert self.decoder is not None
            drawn = self.decoder.masks(small, cams)
            if self.config.decoder_unseen == "attention" and self.decoder.trained_nodes:
                seen = np.array([n in self.decoder.trained_nodes for n in nodes])
                drawn = np.where(seen[:, None, None], drawn, cams)
            cams = drawn
            t = self._tick("decoder", t)
        mode = self.config.regions_config.mode if self.config.regions else None
        regions = None
        if mode in ("maps", "vote", "diffusion"):
            regions = superpixels(small, self.config.regions_config)
            t = self._tick("regions", t)
        if not self.config.saliency:
            labels = cam_only_labels(self._region_cams(small, cams, regions, None), self.config.algorithm1.gamma1)
            t = self._tick("algorithm1", t)
            return nodes, cams, None, self._per_region(labels, cams, regions, t)
        assert self.saliency is not None
        if self.config.erasing:
            sal, _ = iterative_saliency(small, self.saliency, self.config.erasing_config)
        else:
            sal = np.asarray(self.saliency(small), np.float32)
        t = self._tick("saliency", t)
        region_cams, region_sal = cams, sal
        if mode in ("maps", "diffusion"):
            region_sal = region_mean(sal, regions)
            region_cams = self._region_cams(small, cams, regions, sal)
            t = self._tick("regions", t)
        if self.config.crf:
            labels = crf_refine(small, region_cams, region_sal, self.config.algorithm1, self.config.crf_config)
            t = self._tick("crf", t)
        else:
            labels = algorithm1(region_cams, region_sal, self.config.algorithm1)
            t = self._tick("algorithm1", t)
        return nodes, cams, sal, self._per_region(labels, cams, regions, t)

    def _segmenter_maps(
        self,
        dataset: str,
        image: np.ndarray,
        small: np.ndarray,
        nodes: tuple[str, ...],
        size: tuple[int, int],
        t: float,
        cams: np.ndarray | None = None,
    ) -> tuple[tuple[str, ...], np.ndarray, None, np.ndarray]:
        """The ``segmenter`` stage: the network's decisions constrained by the tags, the tag
        classifier's attention (``cams`` when already computed) only where an untaught class must be
        told apart (returned as the attention; zeros when it was not needed)."""
        assert self.segmenter is not None
        probabilities = self.segmenter.probabilities(image, size)
        t = self._tick("segmenter", t)
        asked: list[np.ndarray] = [] if cams is None else [cams]

        def attention() -> np.ndarray:
            if not asked:
                asked.append(self.classifier.attention(small, nodes, size))
            return asked[0]

        taggable = taggable_nodes(self.hierarchy, dataset)
        labels = tag_constrained_labels(
            self.hierarchy, probabilities, nodes, self.segmenter.taught, attention, taggable=taggable
        )
        self._tick("segmenter", t)
        cams = asked[0] if asked else np.zeros((len(nodes), *size), np.float32)
        return nodes, cams, None, labels

    def _region_cams(
        self, small: np.ndarray, cams: np.ndarray, regions: np.ndarray | None, sal: np.ndarray | None
    ) -> np.ndarray:
        """The attention Algorithm 1 sees: averaged per superpixel (``maps``), diffused over the
        superpixel graph with ``sal`` as foreground feature (``diffusion``), else as it is."""
        mode = self.config.regions_config.mode if self.config.regions else None
        if mode == "diffusion":
            return diffuse_classes(small, cams, regions, sal, self.config.regions_config)
        if mode == "maps":
            return region_mean(cams, regions)
        return cams

    def _per_region(self, labels: np.ndarray, cams: np.ndarray, regions: np.ndarray | None, t: float) -> np.ndarray:
        """The ``regions`` stage after the labels: ``vote`` / ``components``; other modes: unchanged."""
        mode = self.config.regions_config.mode if self.config.regions else None
        if mode == "vote":
            assert regions is not None
            labels = region_vote(labels, regions)
        elif mode == "components":
            labels = component_classes(labels, cams)
        else:
            return labels
        self._tick("regions", t)
        return labels

    def node_map(self, sample: Sample) -> tuple[tuple[str, ...], np.ndarray]:
        """(nodes, full-resolution int32 map of node indices, -1 = background/void)."""
        nodes, _, _, labels = self.maps(sample)
        h, w = sample.image.shape[:2]
        full = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        return nodes, full

    def __call__(self, sample: Sample) -> NodeDistribution:
        nodes, cams, sal, labels = self.maps(sample)
        h, w = sample.image.shape[:2]
        if not nodes:
            return NodeDistribution.void((h, w))
        if self.config.output == "hard":
            return NodeDistribution.from_hard(cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST), nodes)
        m = cams if sal is None else combined_map(cams, sal)
        m = np.where((labels >= 0)[None], np.maximum(m, 1e-6), 0.0)
        m = np.round(m, 2)  # few distinct rows keep the palette small (see training.labels.node_distribution)
        mass = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in m.astype(np.float32)])
        return NodeDistribution.from_mass(mass, nodes)


# --------------------------------------------------------------------------- label files
HARD_SUFFIX = ".png"
SOFT_SUFFIX = ".npz"


def label_path(out_dir: Path, sample_id: str, output: Output) -> Path:
    return Path(out_dir) / f"{sample_id}{HARD_SUFFIX if output == 'hard' else SOFT_SUFFIX}"


def encode_label(distribution: NodeDistribution, hierarchy: Hierarchy, output: Output) -> bytes:
    """File bytes of one pseudo label (hard: 8/16-bit PNG of class ids; soft: ``.npz`` palette)."""
    if output == "hard":
        ids = np.array([hierarchy.node(n).id for n in distribution.nodes] + [hierarchy.void_value], np.int64)
        id_map = ids[distribution.index].astype(hierarchy.mask_dtype)  # index -1 -> last entry = void
        ok, buf = cv2.imencode(HARD_SUFFIX, id_map)
        if not ok:
            raise RuntimeError("cv2.imencode failed for a pseudo-label PNG")
        return buf.tobytes()
    import io

    bio = io.BytesIO()
    np.savez_compressed(bio, nodes=np.array(distribution.nodes), index=distribution.index, table=distribution.table)
    return bio.getvalue()


@dataclass(frozen=True)
class PrecomputedLabels:
    """Loader generator: the pseudo label written for ``sample.sample_id`` under ``label_dir``."""

    hierarchy: Hierarchy
    label_dir: Path
    output: Output = "hard"

    def __call__(self, sample: Sample) -> NodeDistribution:
        path = label_path(self.label_dir, sample.sample_id, self.output)
        if not path.is_file():
            raise PseudoLabelError(
                f"{path}: no precomputed pseudo label for {sample.dataset!r} sample {sample.sample_id!r} "
                "(run `python -m training.labels.pseudo_labels generate`; check its skipped.json)"
            )
        if self.output == "hard":
            id_map = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if id_map is None or id_map.ndim != 2:
                raise PseudoLabelError(f"{path}: not a single-channel pseudo-label PNG")
            dist = NodeDistribution.from_node_ids(id_map, self.hierarchy)
        else:
            with np.load(path) as data:
                dist = NodeDistribution(tuple(str(n) for n in data["nodes"]), data["index"], data["table"])
        if dist.shape != tuple(sample.image.shape[:2]):
            raise PseudoLabelError(f"{path}: pseudo label is {dist.shape}, image is {sample.image.shape[:2]}")
        return dist
