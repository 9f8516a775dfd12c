"""Class-conditioned attention decoder: a coarse class attention map in, that class's mask out.

The TransferNet idea (Hong et al., CVPR 2016): segmentation knowledge learned on strongly labelled
categories transfers to weakly labelled ones when the decoder is *class-agnostic* and conditioned
on a class-specific attention map. Here the attention is the tag classifier's Grad-CAM (the maps
the rest of the pipeline uses), so the decoder learns the one thing Grad-CAM cannot do at 12 x 16
cells: turn "the car is about here" into the car's outline at output stride 4.

Network: frozen ImageNet MobileNetV2 taps at strides 16 (block 17, 320 channels), 8 (block 6, 32)
and 4 (block 3, 24); at each stride the features, the features multiplied by the attention (the
TransferNet "attention-weighted" input) and the attention itself go through one 3x3 convolution,
coarse to fine, to one logit per pixel. Only the decoder trains (about 60k weights), so training
on cached backbone features takes minutes on a CPU.

Training pairs come from the per-pixel datasets: for every image and every tag node whose pixels
it labels (a node's mask = pixels whose class is the node or one of its descendants), the Grad-CAM
of that node and the node's mask. Nodes a per-pixel set cannot label (the weak-only classes, e.g.
bus when a set says only "vehicle") simply yield no pairs, so the decoder never sees them and
must transfer, as in the paper's setting. ``exclude`` holds out further nodes for transfer tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import normalize_image
from training.data.readers.base import Sample
from training.labels.pseudo_labels.classifier import (
    FrozenPrefixBackbone,
    RetargetedClassifier,
    TagClassifier,
    TrainConfig,
    load_payload,
    resize_rgb,
    save_model,
    sgd_loop,
)

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "hiseg_attention_decoder"
TAPS = (3, 6, 17)  # MobileNetV2 blocks at strides 4, 8, 16 (with output stride 16)
MIN_MASK_PIXELS = 64  # smaller masks at the decoder's input size (under 0.1 % of 192 x 320) teach only noise


class AttentionDecoder(nn.Module):
    """Frozen backbone taps + a small coarse-to-fine decoder; :meth:`forward` gives mask logits."""

    def __init__(self, config: TrainConfig | None = None) -> None:
        super().__init__()
        config = config or TrainConfig(freeze_blocks=99)
        if config.backbone != "mobilenet_v2":
            raise ValueError(f"attention decoder: backbone must be mobilenet_v2 (its taps), got {config.backbone!r}")
        self.config = config
        self.trained_nodes: tuple[str, ...] | None = None  # set from the checkpoint: the nodes it has seen
        self.backbone = FrozenPrefixBackbone(config.backbone, 16, config.pretrained, frozen=99)
        self.backbone.requires_grad_(False)
        coarse, mid, fine = self.tap_channels = self._tap_channels()
        self.coarse = _conv(2 * coarse + 1, 64)
        self.mid = _conv(64 + 2 * mid + 1, 32)
        self.fine = _conv(32 + 2 * fine + 1, 16)
        self.head = nn.Conv2d(16, 1, 1)

    def _tap_channels(self) -> tuple[int, int, int]:
        blocks = list(self.backbone._blocks())
        channels = []
        for i in TAPS:
            conv = [m for m in blocks[i].modules() if isinstance(m, nn.Conv2d)][-1]
            channels.append(int(conv.out_channels))
        fine, mid, coarse = channels
        return coarse, mid, fine

    @torch.no_grad()
    def taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(stride-16, stride-8, stride-4) frozen features of normalised images ``B x 3 x H x W``."""
        self.backbone.eval()
        out = {}
        for i, block in enumerate(self.backbone._blocks()):
            x = block(x)
            if i in TAPS:
                out[i] = x
            if i >= TAPS[-1]:
                break
        return out[TAPS[2]], out[TAPS[1]], out[TAPS[0]]

    def decode(self, taps: Sequence[torch.Tensor], attention: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Mask logits ``B x H x W`` from :meth:`taps` and attention ``B x 1 x h x w`` (any size, [0, 1])."""
        coarse, mid, fine = taps
        x = self.coarse(conditioned(coarse, attention))
        x = _up(x, mid)
        x = self.mid(torch.cat([x, conditioned(mid, attention)], dim=1))
        x = _up(x, fine)
        x = self.fine(torch.cat([x, conditioned(fine, attention)], dim=1))
        return functional.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.decode(self.taps(x), attention, tuple(x.shape[-2:]))

    @torch.no_grad()
    def masks(self, image: np.ndarray, attention: np.ndarray) -> np.ndarray:
        """Mask probabilities ``C x H x W`` (float32) for attention maps ``C x H x W`` of one RGB image."""
        self.eval()
        h, w = image.shape[:2]
        if len(attention) == 0:
            return np.zeros((0, h, w), np.float32)
        ih, iw = self.config.input_size
        x = torch.from_numpy(normalize_image(resize_rgb(image, (ih, iw))))
        taps = self.taps(x)
        att = torch.from_numpy(np.ascontiguousarray(attention, np.float32))[:, None]
        att = functional.interpolate(att, size=(ih, iw), mode="bilinear", align_corners=False)
        expanded = [t.expand(len(att), -1, -1, -1) for t in taps]
        prob = torch.sigmoid(self.decode(expanded, att, (ih, iw))).numpy()
        return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in prob]).astype(np.float32)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return functional.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def conditioned(features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """[features, features x attention, attention] at the features' resolution (area-resampled attention)."""
    a = functional.adaptive_avg_pool2d(attention, features.shape[-2:])
    return torch.cat([features, features * a, a], dim=1)


# --------------------------------------------------------------------------- training pairs
def node_mask(hierarchy: Hierarchy, sample: Sample, node: str) -> np.ndarray:
    """bool H x W: pixels of a per-pixel sample whose class is ``node`` or one of its descendants."""
    if sample.label is None:
        raise ValueError(f"{sample.dataset} {sample.sample_id}: no per-pixel label")
    ids = hierarchy.dataset(sample.dataset).ids
    wanted = [
        i for i, n in ids.items() if isinstance(i, int) and n is not None and node in (n, *hierarchy.ancestors(n))
    ]
    return np.isin(sample.label, wanted)


@dataclass(frozen=True)
class TrainingPair:
    """One image (index into the cached taps), one node's attention and its true mask, at input size."""

    image: int
    node: str
    attention: np.ndarray  # float16 H x W
    mask: np.ndarray | None  # bool H x W; None for a tag image (no per-pixel truth)


def training_pairs(
    samples: Iterable[Sample],
    hierarchy: Hierarchy,
    classifier: TagClassifier | RetargetedClassifier,
    input_size: tuple[int, int],
    exclude: Sequence[str] = (),
) -> tuple[list[np.ndarray], list[TrainingPair]]:
    """(images resized to ``input_size``, pairs) for every classifier node a sample labels."""
    h, w = input_size
    nodes = [n for n in classifier.nodes if n not in set(exclude)]
    images, pairs = [], []
    for sample in samples:
        present = []
        masks = {}
        for node in nodes:
            mask = cv2.resize(
                node_mask(hierarchy, sample, node).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
            )
            if int(mask.sum()) >= MIN_MASK_PIXELS:
                present.append(node)
                masks[node] = mask.astype(bool)
        if not present:
            continue
        small = resize_rgb(sample.image, input_size)
        cams = classifier.attention(small, present, input_size)
        for node, cam in zip(present, cams, strict=True):
            pairs.append(TrainingPair(len(images), node, cam.astype(np.float16), masks[node]))
        images.append(small)
    return images, pairs


class PairBatches:
    """Random batches of pairs over cached taps of their images and of the images' mirror images.

    Pairs without a mask (tag images: attention only, the adversarial refinement's input) give
    ``None`` targets.
    """

    def __init__(self, model: AttentionDecoder, images: Sequence[np.ndarray], pairs: Sequence[TrainingPair]) -> None:
        both = np.concatenate([np.stack(images), np.stack(images)[:, :, ::-1]])
        chunks = [model.taps(torch.from_numpy(normalize_image(both[i : i + 16]))) for i in range(0, len(both), 16)]
        self.taps = [torch.cat([c[k] for c in chunks]) for k in range(3)]
        self.images = len(images)
        self.attention = np.stack([p.attention for p in pairs])
        self.masks = None if pairs[0].mask is None else np.stack([p.mask for p in pairs])
        self.rows = np.array([p.image for p in pairs])

    def draw(self, rng: np.random.Generator, size: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """(taps of the batch's images, attention ``B x 1 x H x W``, masks ``B x H x W`` or None)."""
        pick = rng.integers(0, len(self.rows), size)
        flip = rng.random(size) < 0.5

        def flipped(arrays: np.ndarray) -> torch.Tensor:
            out = np.stack([a[:, ::-1] if f else a for a, f in zip(arrays[pick], flip, strict=True)])
            return torch.from_numpy(np.ascontiguousarray(out, np.float32))

        index = torch.from_numpy(self.rows[pick] + self.images * flip)
        masks = None if self.masks is None else flipped(self.masks)
        return [t[index] for t in self.taps], flipped(self.attention)[:, None], masks


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice per pair: most pairs' objects cover 0.1-10 % of the image, so
    cross-entropy alone is best served by a timid decoder that never says "here" (measured: mask
    probabilities capped near 0.23 on every class); the Dice term asks for the object's whole area."""
    prob = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    dice = 1 - (2 * (prob * y).sum(1) + 1) / (prob.sum(1) + y.sum(1) + 1)
    return functional.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def train_decoder(images: Sequence[np.ndarray], pairs: Sequence[TrainingPair], config: TrainConfig) -> AttentionDecoder:
    """Train the decoder on cached taps (images and their mirror images) with binary cross-entropy."""
    if not pairs:
        raise ValueError("train_decoder: no training pairs (no per-pixel image labels any tag node)")
    model = AttentionDecoder(config)
    batches = PairBatches(model, images, pairs)

    def loss_fn(m: nn.Module, x: tuple, y: torch.Tensor) -> torch.Tensor:
        taps, att = x
        return mask_loss(m.decode(taps, att, config.input_size), y)

    def batch(rng: np.random.Generator) -> tuple[tuple, torch.Tensor]:
        taps, att, y = batches.draw(rng, config.batch_size)
        return (taps, att), y

    logger.info("attention decoder: %d pairs from %d images", len(pairs), len(images))
    sgd_loop(model, batch, loss_fn, config, "attention decoder")
    model.eval()
    return model


def save_decoder(model: AttentionDecoder, path, nodes: Sequence[str], adversarial: float = 0.0) -> None:
    """Checkpoint; records the nodes it was trained on (what it has seen, what it transfers to) and the
    weight of the adversarial term it was trained with (0: none)."""
    save_model(model, path, CHECKPOINT_KIND, {"trained_nodes": list(nodes), "adversarial": float(adversarial)})


def load_decoder(path) -> AttentionDecoder:
    payload = load_payload(path, CHECKPOINT_KIND)
    config = TrainConfig.from_dict({**payload["config"], "pretrained": None})
    model = AttentionDecoder(config)
    model.load_state_dict(payload["state_dict"])
    model.trained_nodes = tuple(payload.get("trained_nodes") or ())
    model.eval()
    return model
