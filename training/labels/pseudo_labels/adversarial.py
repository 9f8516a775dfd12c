"""Adversarial refinement of the attention decoder: the P-Net idea of Xiao et al. (AAAI 2018).

The decoder learns masks from the per-pixel sets' classes only; on a tag image, and above all on a
class no per-pixel set labels, nothing tells it what a good mask looks like. P-Net adds a critic
that sees an image and a mask and says whether the mask is a true object mask of that image; the
decoder is trained to fool it on the tag images' attention maps, so its transferred masks take the
shape statistics of true masks (compact, following the image's edges) without any label of those
classes. Real = true masks of per-pixel pairs, fake = the decoder's masks of tag-image pairs.

Training alternates one decoder step (cross-entropy on per-pixel pairs + ``weight`` x the
non-saturating GAN loss on tag pairs) and one critic step, both with SGD and the poly schedule of
the other trainers here. The critic is a small patch critic on the stride-4 taps (the level where
outlines live), conditioned on the mask as the decoder is on attention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from hiseg_ros.hierarchy import Hierarchy
from training.data.readers.base import Sample
from training.labels.pseudo_labels.attention_decoder import (
    AttentionDecoder,
    PairBatches,
    TrainingPair,
    conditioned,
    mask_loss,
)
from training.labels.pseudo_labels.classifier import RetargetedClassifier, TagClassifier, TrainConfig, resize_rgb
from training.labels.tags import tag_nodes

logger = logging.getLogger(__name__)


class MaskCritic(nn.Module):
    """(stride-4 taps, mask ``B x H x W`` in [0, 1]) -> one logit per image: a true mask of this image?"""

    def __init__(self, fine_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * fine_channels + 1, 32, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 1, 1),
        )

    def forward(self, fine: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(conditioned(fine, mask[:, None])).mean(dim=(1, 2, 3))


def tag_pairs(
    samples: Iterable[Sample],
    hierarchy: Hierarchy,
    classifier: TagClassifier | RetargetedClassifier,
    input_size: tuple[int, int],
) -> tuple[list[np.ndarray], list[TrainingPair]]:
    """(images at ``input_size``, mask-less pairs): the Grad-CAM of every tag node of every tag image."""
    images, pairs = [], []
    known = set(classifier.nodes)
    for sample in samples:
        present = [n for n in tag_nodes(hierarchy, sample.dataset, sample.tags) if n in known]
        if not present:
            continue
        small = resize_rgb(sample.image, input_size)
        cams = classifier.attention(small, present, input_size)
        pairs += [TrainingPair(len(images), n, c.astype(np.float16), None) for n, c in zip(present, cams, strict=True)]
        images.append(small)
    return images, pairs


def train_decoder_adversarial(
    images: Sequence[np.ndarray],
    pairs: Sequence[TrainingPair],
    tag_images: Sequence[np.ndarray],
    unlabelled: Sequence[TrainingPair],
    config: TrainConfig,
    weight: float,
) -> tuple[AttentionDecoder, dict[str, float]]:
    """The decoder of :func:`~training.labels.pseudo_labels.attention_decoder.train_decoder` plus the
    adversarial term on ``unlabelled`` (tag-image) pairs; returns it and the last losses."""
    if not pairs or not unlabelled:
        raise ValueError("adversarial decoder training needs per-pixel pairs and tag-image pairs")
    if weight <= 0:
        raise ValueError(f"adversarial weight: expected > 0, got {weight!r}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    decoder = AttentionDecoder(config)
    critic = MaskCritic(decoder.tap_channels[2])
    strong, weak = PairBatches(decoder, images, pairs), PairBatches(decoder, tag_images, unlabelled)
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt_g = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    opt_d = torch.optim.SGD(critic.parameters(), lr=config.lr, momentum=config.momentum)
    size = config.input_size
    decoder.train()
    critic.train()
    start, last = time.perf_counter(), {}
    for it in range(config.iterations):
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = config.lr * (1 - it / config.iterations) ** 0.9
        taps, att, y = strong.draw(rng, config.batch_size)
        weak_taps, weak_att, _ = weak.draw(rng, config.batch_size)
        supervised = mask_loss(decoder.decode(taps, att, size), y)
        fake = torch.sigmoid(decoder.decode(weak_taps, weak_att, size))
        fooled = critic(weak_taps[2], fake)
        adversarial = functional.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        opt_g.zero_grad(set_to_none=True)
        (supervised + weight * adversarial).backward()
        opt_g.step()
        real, forged = critic(taps[2], y), critic(weak_taps[2], fake.detach())
        critic_loss = functional.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + functional.binary_cross_entropy_with_logits(forged, torch.zeros_like(forged))
        opt_d.zero_grad(set_to_none=True)
        critic_loss.backward()
        opt_d.step()
        last = {"supervised": supervised.item(), "adversarial": adversarial.item(), "critic": critic_loss.item()}
        if it % 25 == 0 or it == config.iterations - 1:
            logger.info(
                "adversarial decoder it %d/%d %s (%.1f s)",
                it + 1,
                config.iterations,
                " ".join(f"{k} {v:.4f}" for k, v in last.items()),
                time.perf_counter() - start,
            )
    decoder.eval()
    return decoder, last
