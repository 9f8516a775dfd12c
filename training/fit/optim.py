"""The optimiser and learning-rate schedule: SGD (the IV 2018 recipe) or AdamW, whose
sub-classifier heads get their own weight decay, linear warm-up, then poly decay.

``optimizer.kind: adamw`` is the alternative for schedules where SGD's single step size fits
neither the randomly initialised heads nor the pretrained trunk: Adam scales each parameter's step
by its own gradient statistics. ``momentum`` is then Adam's beta1; the weight decay is decoupled
(AdamW), so its values are not SGD's. On the main job's short schedule it did not beat SGD
(docs/RESULTS.md, "The main job").

Parameter groups: ``main`` (backbone, shared reduction, the decoder's skip reduction) and one
``head:<classifier>`` per classifier head, whose learning rate is ``lr * optimizer.head_lr[name]``
(default 1). Heads start from random weights while the backbone starts from ImageNet: the usual
remedy (DeepLab's 10x on new layers) is a larger rate for the heads, settable per head. The root's
head has ``weight_decay``, every other head ``sub_weight_decay``.
"""

from __future__ import annotations

import torch

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training.fit.config import TrainConfig


def build_optimizer(model: HierarchicalSegNet, config: TrainConfig, hierarchy: Hierarchy) -> torch.optim.Optimizer:
    """SGD or AdamW over the ``main`` group and one group per head (module docstring)."""
    o = config.optimizer
    root = hierarchy.classifiers[0].name
    main: list[torch.nn.Parameter] = []
    heads: dict[str, list[torch.nn.Parameter]] = {name: [] for name in hierarchy.classifier_names}
    for name, param in model.named_parameters():
        parts = name.split(".")
        (heads[parts[1]] if parts[0] == "heads" else main).append(param)
    groups = [{"params": main, "weight_decay": o.weight_decay, "lr": o.lr, "name": "main"}]
    for name, params in heads.items():
        decay = o.weight_decay if name == root else o.sub_weight_decay
        lr = o.lr * float(o.head_lr.get(name, 1.0))
        groups.append({"params": params, "weight_decay": decay, "lr": lr, "name": f"head:{name}"})
    if o.kind == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration: the learning rate of iteration ``i`` is ``lr * lr_factor(i)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, config))


def lr_factor(iteration: int, config: TrainConfig) -> float:
    """Linear warm-up, then poly decay ``(1 - it / iterations) ** power``."""
    s = config.schedule
    if iteration < s.warmup_iterations:
        return (iteration + 1) / s.warmup_iterations
    return max(0.0, 1.0 - iteration / s.iterations) ** s.poly_power
