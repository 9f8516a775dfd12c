"""Grad-CAM (Selvaraju et al.), as used by Xu et al. for class attention maps.

For class ``c`` with score ``y_c`` and the last convolutional activations ``A_k`` (``k`` channels):
``alpha_k = mean_{ij} dy_c / dA_k[i, j]`` and ``A_c = ReLU(sum_k alpha_k A_k)``. Each map is then
upsampled to the image and divided by its own maximum, so every class spans [0, 1] and the fixed
thresholds of Algorithm 1 mean the same thing for strong and weak activations. Written against
``(features, scores)`` rather than a module hook so any network that exposes its activations works,
including the tiny hand-checkable ones of the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional


def grad_cam(
    features: torch.Tensor,
    scores: torch.Tensor,
    classes: Sequence[int],
    out_size: tuple[int, int] | None = None,
    normalise: bool = True,
) -> torch.Tensor:
    """Attention maps ``len(classes) x H x W`` for one image.

    ``features``: ``1 x K x h x w`` activations that ``scores`` (``1 x C`` or ``C``, pre-sigmoid) were
    computed from, inside an autograd graph. ``out_size``: bilinear upsampling target (None keeps
    ``h x w``). A class whose map is zero everywhere stays zero (no division by zero).
    """
    if features.ndim != 4 or features.shape[0] != 1:
        raise ValueError(f"grad_cam: features must be 1 x K x h x w, got {tuple(features.shape)}")
    if not features.requires_grad:
        raise ValueError("grad_cam: features must be part of an autograd graph (requires_grad)")
    flat = scores.reshape(-1)
    maps = []
    for i, c in enumerate(classes):
        (grads,) = torch.autograd.grad(flat[c], features, retain_graph=i < len(classes) - 1)
        alpha = grads.mean(dim=(2, 3), keepdim=True)  # 1 x K x 1 x 1
        maps.append(functional.relu((alpha * features).sum(dim=1)).detach())  # 1 x h x w
    if not maps:
        h, w = out_size if out_size is not None else features.shape[-2:]
        return torch.zeros((0, h, w))
    cams = torch.cat(maps, dim=0)
    if out_size is not None and tuple(cams.shape[-2:]) != tuple(out_size):
        cams = functional.interpolate(cams[None], size=out_size, mode="bilinear", align_corners=False)[0]
    if normalise:
        peak = cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        cams = torch.where(peak > 1e-12, cams / peak, torch.zeros_like(cams))
    return cams
