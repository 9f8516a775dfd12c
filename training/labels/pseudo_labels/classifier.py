"""Multi-label tag classifier: the source of the Grad-CAM attention maps.

Backbone (MobileNetV2 with offline ImageNet weights by default) -> global average pooling ->
linear layer with one output per *hierarchy node* a tag maps to (``man`` and ``woman`` both become
``person``), trained with the multi-label soft-margin loss of Xu et al. Global average pooling keeps
the last feature map spatial until the very end, which is what makes its Grad-CAM maps localise.
Batch-norm statistics stay frozen at ImageNet values (batches here are small) and the first
``freeze_blocks`` feature blocks are not trained, which keeps a CPU run to a few minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import build_backbone, normalize_image
from training.config_schema import reject_unknown_keys
from training.labels.pseudo_labels.gradcam import grad_cam

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "hiseg_tag_classifier"


def tag_node_space(hierarchy: Hierarchy, dataset: str) -> tuple[str, ...]:
    """The distinct nodes the dataset's tags map to, in mapping order: the classifier's outputs."""
    ds = hierarchy.dataset(dataset)
    if ds.supervision != "tags":
        raise ValueError(f"dataset {dataset!r} has {ds.supervision!r} supervision, not image-level tags")
    return tuple(dict.fromkeys(n for n in ds.ids.values() if n is not None))


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size = (H, W)`` (area filter when shrinking: keeps thin poles and signs visible)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class TrainConfig:
    """Small-CPU training settings shared by the tag classifier and the foreground segmenter."""

    input_size: tuple[int, int] = (224, 288)
    batch_size: int = 8
    iterations: int = 200
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    freeze_blocks: int = 14  # MobileNetV2 has 19 blocks; >= 19 = linear probe on frozen ImageNet features
    backbone: str = "mobilenet_v2"
    output_stride: int = 16
    pretrained: str | None = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"train.input_size: expected [H, W] >= 32, got {self.input_size!r}")
        for key in ("batch_size", "iterations"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"train.{key}: expected a positive integer, got {getattr(self, key)!r}")
        if self.lr <= 0:
            raise ValueError(f"train.lr: expected > 0, got {self.lr!r}")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"train.output_stride: expected 8, 16 or 32, got {self.output_stride!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "train") -> TrainConfig:
        names = {f.name for f in fields(cls)}
        reject_unknown_keys(where, data, sorted(names))
        values = dict(data)
        if "input_size" in values:
            values["input_size"] = tuple(int(v) for v in values["input_size"])
        return cls(**values)


class FrozenPrefixBackbone(nn.Module):
    """Backbone whose first ``frozen`` feature blocks run without gradients; BN always in eval mode."""

    def __init__(self, name: str, output_stride: int, pretrained: str | None, frozen: int) -> None:
        super().__init__()
        self.net = build_backbone(name, output_stride, pretrained=pretrained)
        self.frozen = frozen
        self.out_channels = int(self.net.out_channels)
        blocks = list(self._blocks())
        for block in blocks[:frozen]:
            block.requires_grad_(False)

    def _blocks(self) -> Iterator[nn.Module]:
        if hasattr(self.net, "features"):
            yield from self.net.features
        else:  # ResNet: stem + layers
            yield nn.Sequential(self.net.conv1, self.net.bn1, self.net.relu, self.net.maxpool)
            yield from (self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4)

    def train(self, mode: bool = True) -> FrozenPrefixBackbone:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Activations after the frozen blocks (constant during training, so they can be cached)."""
        for block in list(self._blocks())[: self.frozen]:
            x = block(x)
        return x

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        """The trainable blocks, from :meth:`prefix` output."""
        for block in list(self._blocks())[self.frozen :]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))


@torch.no_grad()
def cached_prefix(
    backbone: FrozenPrefixBackbone, images: np.ndarray, chunk: int = 16, pool: bool = False
) -> torch.Tensor:
    """Frozen-prefix activations of pre-resized uint8 images and of their mirror images.

    Row ``i`` is image ``i``, row ``N + i`` its horizontal flip. The frozen blocks cost most of a
    training step on the CPU, and their output never changes, so computing it once makes a few
    hundred iterations take minutes instead of tens of minutes. ``pool``: keep only the spatial mean
    (when the whole backbone is frozen, a linear probe needs nothing else and full maps would not fit).
    """
    backbone.eval()
    both = np.concatenate([images, images[:, :, ::-1]])
    chunks = (both[i : i + chunk] for i in range(0, len(both), chunk))
    parts = [backbone.prefix(torch.from_numpy(normalize_image(c))) for c in chunks]
    return torch.cat([p.mean(dim=(2, 3), keepdim=True) if pool else p for p in parts])


def cached_batch(
    features: torch.Tensor, targets: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of cached prefix activations (second half = mirrored images) and their targets."""
    n = len(targets)
    pick = rng.integers(0, n, size)
    flip = rng.random(size) < 0.5
    y = targets[pick]
    if y.ndim == 3:  # per-pixel targets flip with their images
        y = np.stack([t[:, ::-1] if f else t for t, f in zip(y, flip, strict=True)])
    rows = torch.from_numpy(pick + n * flip)
    return features[rows], torch.from_numpy(np.ascontiguousarray(y))


class TagClassifier(nn.Module):
    """Backbone + global average pooling + linear; ``forward`` returns (activations, logits)."""

    def __init__(
        self, nodes: Sequence[str], config: TrainConfig | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        config = config or TrainConfig()
        self.nodes = tuple(nodes)
        # tag -> output node of the hierarchy it was trained with: lets another hierarchy, which names
        # the same tags' classes differently, use this classifier (see :func:`classifier_for_hierarchy`)
        self.tags = None if tags is None else {str(t): str(n) for t, n in tags.items()}
        self.config = config
        self.backbone = FrozenPrefixBackbone(
            config.backbone, config.output_stride, config.pretrained, config.freeze_blocks
        )
        self.fc = nn.Linear(self.backbone.out_channels, len(self.nodes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return features, self.fc(features.mean(dim=(2, 3)))

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """Sigmoid probability per node for one RGB uint8 image."""
        self.eval()
        x = torch.from_numpy(normalize_image(resize_rgb(image, self.config.input_size)))
        return torch.sigmoid(self(x)[1][0]).numpy()

    def attention(self, image: np.ndarray, nodes: Sequence[str], out_size: tuple[int, int]) -> np.ndarray:
        """Grad-CAM maps ``len(nodes) x H x W`` in [0, 1] for the given (present) nodes."""
        self.eval()
        index = {n: i for i, n in enumerate(self.nodes)}
        missing = [n for n in nodes if n not in index]
        if missing:
            raise ValueError(f"tag classifier has no output for nodes {missing} (it knows {list(self.nodes)})")
        x = torch.from_numpy(normalize_image(resize_rgb(image, self.config.input_size)))
        with torch.enable_grad():
            features = self.backbone(x)
            if not features.requires_grad:  # everything frozen: still need a graph from the activations
                features.requires_grad_(True)
            scores = self.fc(features.mean(dim=(2, 3)))
            cams = grad_cam(features, scores, [index[n] for n in nodes], out_size)
        return cams.numpy()


def multi_hot(node_lists: Sequence[Sequence[str]], nodes: Sequence[str]) -> np.ndarray:
    """``N x C`` float32 targets; nodes not in ``nodes`` are an error (a mapping bug, not data)."""
    index = {n: i for i, n in enumerate(nodes)}
    out = np.zeros((len(node_lists), len(nodes)), np.float32)
    for row, present in enumerate(node_lists):
        for n in present:
            out[row, index[n]] = 1.0
    return out


def sgd_loop(
    model: nn.Module,
    batch: Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    what: str,
) -> list[float]:
    """Plain SGD with a poly learning-rate schedule; returns the loss per iteration."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    model.train()
    losses = []
    start = time.perf_counter()
    for it in range(config.iterations):
        for group in opt.param_groups:
            group["lr"] = config.lr * (1 - it / config.iterations) ** 0.9
        x, y = batch(rng)
        loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if it % 25 == 0 or it == config.iterations - 1:
            logger.info(
                "%s it %d/%d loss %.4f (%.1f s)",
                what,
                it + 1,
                config.iterations,
                losses[-1],
                time.perf_counter() - start,
            )
    return losses


def train_classifier(
    images: Sequence[np.ndarray], node_lists: Sequence[Sequence[str]], nodes: Sequence[str], config: TrainConfig
) -> TagClassifier:
    """Train on RGB images with their present tag nodes (multi-label soft-margin loss)."""
    if not images:
        raise ValueError("train_classifier: no training images")
    model = TagClassifier(nodes, config)
    resized = np.stack([resize_rgb(im, config.input_size) for im in images])
    targets = multi_hot(node_lists, nodes)
    probe = model.backbone.frozen >= len(list(model.backbone._blocks()))  # whole backbone frozen: linear probe
    features = cached_prefix(model.backbone, resized, pool=probe)
    criterion = nn.MultiLabelSoftMarginLoss()

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return criterion(m.fc(m.backbone.suffix(x).mean(dim=(2, 3))), y)

    sgd_loop(model, lambda rng: cached_batch(features, targets, config.batch_size, rng), loss_fn, config, "classifier")
    model.eval()
    return model


def save_model(model: nn.Module, path: Path | str, kind: str, extra: Mapping[str, Any]) -> None:
    """Checkpoint = tensors + JSON-like metadata (loadable with ``weights_only=True``); written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = asdict(model.config)  # type: ignore[arg-type]
    cfg["input_size"] = list(cfg["input_size"])
    payload = {"kind": kind, "config": cfg, "state_dict": model.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_payload(path: Path | str, kind: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {kind} checkpoint (found {found!r})")
    return payload


def save_classifier(model: TagClassifier, path: Path | str) -> None:
    extra: dict[str, Any] = {"nodes": list(model.nodes)}
    if model.tags is not None:
        extra["tags"] = dict(model.tags)
    save_model(model, path, CHECKPOINT_KIND, extra)


def load_classifier(path: Path | str) -> TagClassifier:
    """Rebuild a :class:`TagClassifier` from :func:`save_classifier` output (no ImageNet weights needed)."""
    payload = load_payload(path, CHECKPOINT_KIND)
    config = TrainConfig.from_dict({**payload["config"], "pretrained": None})
    model = TagClassifier(payload["nodes"], config, payload.get("tags"))  # older checkpoints record no tags
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model


def hierarchy_tags(hierarchy: Hierarchy, dataset: str) -> dict[str, str]:
    """Tag -> node of an image-level dataset under ``hierarchy`` (tags mapped to ``null`` left out)."""
    return {str(t): n for t, n in hierarchy.dataset(dataset).ids.items() if n is not None}


@dataclass(frozen=True, eq=False)
class RetargetedClassifier:
    """A tag classifier answering for the nodes of another hierarchy than the one it was trained with.

    Hierarchies name the classes of the same tags differently (iv2018 maps ``train`` to ``on-rails``,
    iv2019 to ``train``; iv2019 merges ``stop sign`` into ``traffic-sign``), so outputs are matched
    through the tag strings, which both share. A target node's attention is the pixel-wise maximum
    of the Grad-CAM maps of the classifier outputs its tags map to (each map is normalised to [0, 1],
    so the maximum is too). This reuses a trained classifier instead of retraining it per hierarchy.
    """

    classifier: TagClassifier
    groups: Mapping[str, tuple[str, ...]]  # target node -> classifier output nodes

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.groups)

    def attention(self, image: np.ndarray, nodes: Sequence[str], out_size: tuple[int, int]) -> np.ndarray:
        """Grad-CAM maps ``len(nodes) x H x W`` for target-hierarchy nodes (see the class docstring)."""
        missing = [n for n in nodes if n not in self.groups]
        if missing:
            raise ValueError(f"tag classifier has no output for nodes {missing} (it knows {list(self.groups)})")
        if not nodes:
            return np.zeros((0, *out_size), np.float32)
        sources = list(dict.fromkeys(s for n in nodes for s in self.groups[n]))
        cams = self.classifier.attention(image, sources, out_size)
        row = {s: i for i, s in enumerate(sources)}
        return np.stack([cams[[row[s] for s in self.groups[n]]].max(axis=0) for n in nodes])


def classifier_for_hierarchy(
    classifier: TagClassifier,
    hierarchy: Hierarchy,
    dataset: str,
    classifier_tags: Mapping[str, str] | None = None,
) -> TagClassifier | RetargetedClassifier:
    """``classifier`` made to answer for ``hierarchy``'s nodes of ``dataset``'s tags.

    ``classifier_tags``: tag -> classifier output (default: what the checkpoint records). Without a
    tag map the outputs must already be the hierarchy's nodes. Raises ``ValueError`` naming the tags
    the classifier cannot answer for.
    """
    target = hierarchy_tags(hierarchy, dataset)
    tags = classifier_tags if classifier_tags is not None else classifier.tags
    if tags is None:
        missing = sorted(set(target.values()) - set(classifier.nodes))
        if missing:
            raise ValueError(
                f"tag classifier outputs {list(classifier.nodes)} lack nodes {missing} of hierarchy "
                f"{hierarchy.name!r} and its checkpoint records no tag map: give the hierarchy it was trained "
                "with (--classifier-hierarchy) so outputs can be matched through the tag names"
            )
        return classifier
    groups: dict[str, list[str]] = {}
    for tag, node in target.items():
        source = tags.get(tag)
        if source is None or source not in classifier.nodes:
            raise ValueError(
                f"tag {tag!r} (node {node!r} of hierarchy {hierarchy.name!r}) has no output in the tag "
                f"classifier (its tags: {sorted(tags)}, outputs: {list(classifier.nodes)})"
            )
        groups.setdefault(node, [])
        if source not in groups[node]:
            groups[node].append(source)
    if all(sources == [node] for node, sources in groups.items()):
        return classifier  # same node names: nothing to translate
    return RetargetedClassifier(classifier, {n: tuple(s) for n, s in groups.items()})


def classifier_logits_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The multi-label soft-margin loss (exposed for tests)."""
    return functional.multilabel_soft_margin_loss(logits, targets)
