"""The trunk-gradient safeguard, per-head learning rates and gradient clipping, on the real network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_training import HIERARCHIES, tiny_config, write_config

from hiseg_ros.hierarchy import load_hierarchy
from hiseg_ros.model import HierarchicalSegNet
from training.config_schema import ConfigError
from training.fit.config import load_config, parse_config
from training.fit.loss import default_weights
from training.fit.optim import build_optimizer, build_scheduler
from training.fit.trunk_gradient import (
    attach_trunk_gradient,
    default_trunk_weights,
    scale_gradient,
    trunk_gradient_factors,
)

IV2018 = load_hierarchy(HIERARCHIES / "iv2018.yaml")


def tiny_net(seed: int = 0) -> HierarchicalSegNet:
    torch.manual_seed(seed)
    return HierarchicalSegNet(IV2018.classifier_sizes, pretrained=None, shared_channels=16)


def test_scale_gradient_keeps_the_value_and_scales_the_gradient() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)  # bit for bit
    (y * torch.arange(12.0).view(3, 4)).sum().backward()
    assert torch.allclose(x.grad, 0.25 * torch.arange(12.0).view(3, 4))
    frozen = torch.randn(2, requires_grad=True)
    scale_gradient(frozen, 0.0).sum().backward()
    assert torch.equal(frozen.grad, torch.zeros(2))


def test_default_trunk_weights_cap_sub_classifiers() -> None:
    weights = {**default_weights(IV2018), "traffic_sign_front": 1.0, "rider": 0.5, "root": 2.0}
    trunk = default_trunk_weights(IV2018, weights)
    assert trunk["root"] == 2.0 and trunk["traffic_sign_front"] == 0.3 and trunk["rider"] == 0.3
    assert trunk["drivable"] == 0.1  # under the cap: what the head sees
    factors = trunk_gradient_factors(IV2018, weights)
    assert factors["traffic_sign_front"] == pytest.approx(0.3) and factors["rider"] == pytest.approx(0.6)
    assert factors["root"] == 1.0 and factors["drivable"] == 1.0
    explicit = trunk_gradient_factors(IV2018, weights, {"traffic_sign_front": 0.5})
    assert explicit["traffic_sign_front"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown classifier 'signs'"):
        trunk_gradient_factors(IV2018, weights, {"signs": 0.1})


def _grads(net: HierarchicalSegNet, classifier: str) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    logits = net(torch.randn(2, 3, 64, 64))
    target = torch.randint(0, logits[classifier].shape[1], logits[classifier].shape[:1] + logits[classifier].shape[2:])
    torch.nn.functional.cross_entropy(logits[classifier], target).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_hooks_scale_only_what_reaches_the_trunk() -> None:
    plain, scaled = tiny_net(), tiny_net()
    scaled.load_state_dict(plain.state_dict())
    handles = attach_trunk_gradient(scaled, {"traffic_sign_front": 0.1, "root": 1.0})
    assert len(handles) == 1
    g_plain, g_scaled = _grads(plain, "traffic_sign_front"), _grads(scaled, "traffic_sign_front")
    head = [n for n in g_plain if n.startswith("heads.traffic_sign_front.")]
    trunk = [n for n in g_plain if not n.startswith("heads.")]
    assert head and trunk
    for n in head:  # the head learns at full strength
        assert torch.allclose(g_scaled[n], g_plain[n], atol=1e-7)
    for n in trunk:  # the trunk gets a tenth
        assert torch.allclose(g_scaled[n], 0.1 * g_plain[n], rtol=1e-3, atol=1e-7)
    # the forward pass is that of the unscaled network; the hooks come off again
    x = torch.randn(1, 3, 64, 64)
    plain.eval(), scaled.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(plain(x).values(), scaled(x).values(), strict=True))
    plain.train(), scaled.train()
    for h in handles:
        h.remove()
    g_removed = _grads(scaled, "traffic_sign_front")
    assert all(torch.allclose(g_removed[n], g_plain[n], rtol=1e-3, atol=1e-7) for n in trunk)


def test_head_learning_rates_per_group_follow_the_schedule(tmp_path: Path) -> None:
    raw = tiny_config(
        tmp_path / "data", tmp_path / "run", optimizer={"lr": 0.02, "head_lr": {"traffic_sign_front": 10}}
    )
    config = parse_config(raw)
    net = tiny_net()
    optimizer = build_optimizer(net, config, IV2018)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["main"] == 0.02 and lrs["head:root"] == 0.02 and lrs["head:traffic_sign_front"] == pytest.approx(0.2)
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay["head:root"] == config.optimizer.weight_decay
    assert decay["head:drivable"] == config.optimizer.sub_weight_decay
    # every parameter in exactly one group
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    scheduler = build_scheduler(optimizer, config)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head:traffic_sign_front"] == pytest.approx(10 * lrs["main"])


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("loss", {"trunk_weights": {"traffic_sgn": 0.1}}, r"loss\.trunk_weights\.traffic_sgn: unknown classifier"),
        ("loss", {"trunk_weights": {"root": -1}}, r"loss\.trunk_weights\.root: expected a number >= 0"),
        ("optimizer", {"head_lr": {"root": 0}}, r"optimizer\.head_lr\.root: expected a number > 0"),
        ("optimizer", {"head_lr": {"stop": 2}}, r"optimizer\.head_lr\.stop: unknown classifier"),
        ("optimizer", {"clip_grad_norm": 0}, r"optimizer\.clip_grad_norm: expected a norm > 0"),
        ("loss", {"class_weights": {"root": {"lorry": 2}}}, r"loss\.class_weights\.root\.lorry: not a class of"),
        ("loss", {"class_weights": {"root": {"pole": 0}}}, r"loss\.class_weights\.root\.pole: expected a number > 0"),
        ("loss", {"class_weights": {"roots": {"pole": 2}}}, r"loss\.class_weights\.roots: unknown classifier"),
        ("loss", {"class_weights": {"root": [2]}}, r"loss\.class_weights\.root: expected a mapping"),
        ("optimizer", {"kind": "adam"}, r"optimizer\.kind: expected one of sgd, adamw, got 'adam'"),
        ("optimizer", {"kind": "adamw", "momentum": 1.0}, r"optimizer\.momentum: adamw: Adam's beta1, expected < 1"),
    ],
)
def test_bad_safeguard_settings_name_file_and_key(tmp_path: Path, section: str, value: dict, message: str) -> None:
    path = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "data", tmp_path / "run", **{section: value}))
    with pytest.raises(ConfigError, match=rf"bad\.yaml: {message}"):
        load_config(path, check_data=False)
