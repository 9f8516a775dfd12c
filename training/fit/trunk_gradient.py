"""How much of each classifier's loss reaches the shared trunk (backbone + shared reduction).

A sub-classifier's loss weight sets two things at once: how fast its head learns and how hard its
gradient pushes on the features every classifier shares. The IV 2018 weight of 0.1 keeps the trunk
safe but leaves a 43-class head starved; raising it to 1.0 made the traffic-sign loss dominate the
trunk (BatchNorm running variances in the hundreds, the root collapsing to two classes). The two
are decoupled here: ``loss.weights`` is what the head sees, ``loss.trunk_weights`` what the trunk
sees. Where a head meets the trunk its input passes through :func:`scale_gradient` with factor
``trunk_weight / weight``: the forward value is unchanged (bit for bit), only the gradient flowing
back into the trunk is scaled. By default a sub-classifier's trunk weight is ``min(weight, 0.3)``,
so raising a head's weight above 0.3 makes its head learn faster without pushing the trunk harder;
the root's trunk weight is its weight (factor 1). Why 0.3 (``bench/head_health.py``, docs/RESULTS.md
"Head health"): with the sign head at weight 1.0, a trunk weight of 0.3 kept the sign classes'
given-location scores of the unguarded network and the root's mIoU of a network whose trunk saw
only 0.1; a trunk weight of 0.1 halved what the sign head learnt (the head alone cannot make the
shared features tell 43 sign classes apart).

The scaling is installed as forward pre-hooks on the training model's heads
(:func:`attach_trunk_gradient`): the network, its state dict, checkpoints and exported graphs are
those of an unscaled network.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hiseg_ros.hierarchy import ROOT, Hierarchy

SUB_TRUNK_WEIGHT = 0.3  # the most a sub-classifier's loss reaches the trunk by default (module docstring)


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass, ``factor * grad`` in the backward pass (0: the trunk gets nothing)."""
    if factor == 1.0 or not x.requires_grad:
        return x
    frozen = x.detach()
    return frozen + factor * (x - frozen)


def default_trunk_weights(hierarchy: Hierarchy, weights: Mapping[str, float]) -> dict[str, float]:
    """Root: its loss weight; every sub-classifier: ``min(weight, SUB_TRUNK_WEIGHT)``."""
    return {
        c.name: float(weights[c.name]) if c.node == ROOT else min(float(weights[c.name]), SUB_TRUNK_WEIGHT)
        for c in hierarchy.classifiers
    }


def trunk_gradient_factors(
    hierarchy: Hierarchy, weights: Mapping[str, float], trunk_weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per classifier the factor its head's input gradient is multiplied by: ``trunk_weight / weight``.

    ``weights``: every classifier's loss weight (the loss's effective table); ``trunk_weights``
    overrides :func:`default_trunk_weights` per classifier. A classifier of weight 0 sends nothing
    either way (factor 1).
    """
    trunk = default_trunk_weights(hierarchy, weights)
    for name, value in (trunk_weights or {}).items():
        if name not in trunk:
            raise ValueError(f"trunk weights: unknown classifier {name!r} (classifiers {list(trunk)})")
        if not value >= 0:
            raise ValueError(f"trunk weights: {name!r} must be >= 0, got {value!r}")
        trunk[name] = float(value)
    return {name: trunk[name] / float(weights[name]) if weights[name] > 0 else 1.0 for name in trunk}


def attach_trunk_gradient(model: nn.Module, factors: Mapping[str, float]) -> list[RemovableHandle]:
    """Scale the gradient entering each head of ``model.heads`` (its inputs: shared features, and the
    decoder's skip features) by ``factors[name]``; returns the hooks' handles (``remove()`` undoes it)."""
    handles = []
    for name, factor in factors.items():
        if factor == 1.0:
            continue

        def pre_hook(_module: nn.Module, args: tuple, factor: float = factor) -> tuple:
            return tuple(scale_gradient(a, factor) if isinstance(a, torch.Tensor) else a for a in args)

        handles.append(model.heads[name].register_forward_pre_hook(pre_hook))
    return handles
