"""bench/head_health.py builds real variants of default.yaml: the sweep's configs load, and its guards differ."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from bench.head_health import late_loss, run_config, table
from training.fit.config import load_config
from training.fit.loss import default_weights
from training.fit.trunk_gradient import trunk_gradient_factors


def _args(tmp_path: Path, head_lr: float = 1.0) -> argparse.Namespace:
    return argparse.Namespace(data=tmp_path / "data", crop=(192, 384), iterations=40, seed=0, head_lr=head_lr)


def test_sweep_configs_are_variants_of_the_default(tmp_path: Path) -> None:
    factors = {}
    for guard in ("trunk", "none"):
        raw = run_config(1.0, guard, _args(tmp_path, head_lr=10.0 if guard == "none" else 1.0), tmp_path / guard)
        path = tmp_path / f"{guard}.yaml"
        path.write_text(yaml.safe_dump(raw))
        config, hierarchy = load_config(path, check_data=False)
        assert config.schedule.iterations == 40 and config.augment.crop == (192, 384)
        assert config.datasets == load_config(raw["base"], check_data=False)[0].datasets  # the default's data
        weights = {**default_weights(hierarchy), **config.loss.weights}
        factors[guard] = trunk_gradient_factors(hierarchy, weights, config.loss.trunk_weights)
        assert config.loss.weights["traffic_sign_front"] == 1.0
    assert factors["trunk"]["traffic_sign_front"] == 0.3 and factors["none"]["traffic_sign_front"] == 1.0
    raw = run_config(1.0, "trunk=0.3", _args(tmp_path), tmp_path / "t03")
    assert raw["loss"]["trunk_weights"] == {"traffic_sign_front": 0.3}
    assert config.optimizer.head_lr["traffic_sign_front"] == 10.0


def test_late_loss_and_table(tmp_path: Path) -> None:
    log = tmp_path / "train_log.csv"
    rows = [f"{i},{i}" for i in range(1, 21)]
    log.write_text("iteration,loss/traffic_sign_front\n" + "\n".join(rows) + "\n")
    assert late_loss(log) == 19.5  # mean of the last tenth (iterations 19, 20)
    row = {
        "weight": 1.0,
        "guard": "trunk",
        "head_lr": 1.0,
        "root_miou": 0.2,
        "cityscapes_miou": 0.25,
        "cityscapes_traffic_sign_iou": 0.05,
        "sign_miou_given_location": None,
        "sign_pixel_acc_given_location": 0.5,
        "sign_loss_late": 3.2,
        "trunk_bn_max_running_var": 12.0,
    }
    assert table([row]).splitlines()[-1] == "| 1 | trunk | 1x | 20.0 | 25.0 | 5.0 | - / 50.0 | 3.20 | 12.0 |"
