"""The optimiser and learning-rate schedule of the IV 2018 recipe: SGD whose sub-classifier heads
get their own weight decay, linear warm-up, then poly decay."""

from __future__ import annotations

import torch

from hiseg_ros.hierarchy import Hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training.fit.config import TrainConfig


def build_optimizer(model: HierarchicalSegNet, config: TrainConfig, hierarchy: Hierarchy) -> torch.optim.SGD:
    """SGD with two parameter groups: sub-classifier heads get ``sub_weight_decay``, the rest ``weight_decay``."""
    o = config.optimizer
    root = hierarchy.classifiers[0].name
    sub, main = [], []
    for name, param in model.named_parameters():
        parts = name.split(".")
        (sub if parts[0] == "heads" and parts[1] != root else main).append(param)
    groups = [{"params": main, "weight_decay": o.weight_decay, "name": "main"}]
    if sub:
        groups.append({"params": sub, "weight_decay": o.sub_weight_decay, "name": "sub_classifiers"})
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
