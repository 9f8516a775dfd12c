"""Training loop: a tiny run end to end, exact resume, crash-safe checkpoints, checkpoint mismatch errors,
resume through the node's safe checkpoint loader.

Data: the synthetic generator's "small" preset (the four datasets in their real on-disk formats,
scaled to the crop height by ``augment.base_height``). Model:
MobileNetV2 without pretrained weights, shared_channels 16, 64x128 crops, 2-4 iterations.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_hierarchy import load_tiny
from tiny_training import HIERARCHIES, PYTHON, make_tiny_data, tiny_config, write_config

from hiseg_ros.engines import ModelLoadError
from hiseg_ros.engines.checkpoint import load_checkpoint, save_checkpoint
from hiseg_ros.engines.torch_engine import TorchEngine
from hiseg_ros.hierarchy import IGNORE
from training import REPO
from training.fit.checkpoints import CheckpointMismatchError, checkpoint_paths
from training.fit.config import ConfigError, load_config
from training.fit.log import read_csv
from training.fit.loss import HierarchicalLoss
from training.fit.train import main, train
from training.labels.collate import collate_targets
from training.labels.targets import SampleTargets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"))


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_straight_run_equals_interrupted_and_resumed(data_root: Path, tmp_path: Path) -> None:
    cfg_a = write_config(tmp_path / "a.yaml", tiny_config(data_root, tmp_path / "a"))
    config, hierarchy = load_config(cfg_a)
    straight = train(config, hierarchy, progress=False)
    assert straight.iteration == 4 and len(straight.losses) == 4

    # b logs every 3rd iteration: the losses of the others are fetched from the device in one go
    cfg_b = write_config(tmp_path / "b.yaml", tiny_config(data_root, tmp_path / "b", run={"log_every": 3}))
    config_b, _ = load_config(cfg_b)
    first = train(config_b, hierarchy, stop_after=2, progress=False)
    assert first.iteration == 2 and (tmp_path / "b" / "last.pt").is_file()
    second = train(config_b, hierarchy, resume=True, progress=False)
    assert second.iteration == 4

    assert first.losses + second.losses == straight.losses  # identical, not just close
    ca, cb = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert _state_equal(ca.net.state_dict(), cb.net.state_dict())
    assert _state_equal(ca.net.state_dict(), straight.model.state_dict())
    assert ca.training["iteration"] == cb.training["iteration"] == 4
    assert ca.training["scheduler"] == cb.training["scheduler"]

    # checkpoint format: the training state is plain data, read without any allow-listed class
    raw = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)
    assert {"model", "hierarchy", "model_config", "optimizer", "scheduler", "iteration", "config", "rng"} <= set(raw)
    assert set(raw["model_config"]) == {
        "backbone",
        "output_stride",
        "shared_channels",
        "adaptation_depth",
        "adaptation_dilation",
    }
    assert ca.training_info == {"format": 1, "iteration": 4, "world_size": 1}
    # log / plots
    assert [p.name for p in checkpoint_paths(tmp_path / "a")] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    rows = read_csv(tmp_path / "b" / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == [2, 3, 4]  # stop of the first part, every 3rd, the end
    assert {f"loss/{n}" for n in hierarchy.classifier_names} <= set(rows[0])
    assert float(rows[0]["loss"]) == pytest.approx(straight.losses[1]["loss"], rel=1e-5)
    assert [int(r["iteration"]) for r in read_csv(tmp_path / "a" / "train_log.csv")] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "plots" / "losses.png").stat().st_size > 1000
    # one group for the trunk, one per head; sub-classifier heads have their own weight decay
    groups = ca.training["optimizer"]["param_groups"]
    assert len(groups) == 1 + len(hierarchy.classifier_names)
    assert sorted({g["weight_decay"] for g in groups}) == [1e-4, 1.7e-4]


def test_checkpoint_of_another_hierarchy_is_refused_before_training(data_root: Path, tmp_path: Path) -> None:
    flat_raw = tiny_config(data_root, tmp_path / "flat", hierarchy=str(HIERARCHIES / "iv2018_flat.yaml"))
    flat_raw["schedule"] = {"iterations": 1}
    config, hierarchy = load_config(write_config(tmp_path / "flat.yaml", flat_raw))
    assert hierarchy.classifier_names == ("root",)
    train(config, hierarchy, progress=False)  # the flat baseline trains with the same code
    flat_ckpt = tmp_path / "flat" / "last.pt"

    # as --resume of a hierarchical run
    raw = tiny_config(data_root, tmp_path / "flat")
    config_h, hierarchy_h = load_config(write_config(tmp_path / "h.yaml", raw))
    with pytest.raises(CheckpointMismatchError, match="hierarchy 'iv2018_flat'.*'iv2018'"):
        train(config_h, hierarchy_h, resume=True, progress=False)
    # as init
    raw = tiny_config(data_root, tmp_path / "h", checkpoint={"init": str(flat_ckpt)})
    config_i, hierarchy_i = load_config(write_config(tmp_path / "i.yaml", raw))
    with pytest.raises(CheckpointMismatchError, match="iv2018_flat"):
        train(config_i, hierarchy_i, progress=False)
    assert not (tmp_path / "h").exists()  # nothing was written: the error came first
    # a different model layout is refused too
    raw = tiny_config(data_root, tmp_path / "flat", hierarchy=str(HIERARCHIES / "iv2018_flat.yaml"))
    raw["model"]["shared_channels"] = 8
    config_m, hierarchy_m = load_config(write_config(tmp_path / "m.yaml", raw))
    with pytest.raises(CheckpointMismatchError, match="shared_channels"):
        train(config_m, hierarchy_m, resume=True, progress=False)
    # CLI: a clear message and exit status 2
    assert main(["--config", str(tmp_path / "h.yaml"), "--resume", str(flat_ckpt), "--no-progress"]) == 2
    # weights without the training state can start a run, not continue one
    loaded = load_checkpoint(flat_ckpt)
    weights_only = save_checkpoint(tmp_path / "weights.pt", loaded.net, loaded.hierarchy, loaded.config)
    with pytest.raises(CheckpointMismatchError, match=r"weights.pt: holds no training state.*checkpoint.init"):
        train(config, hierarchy, resume=str(weights_only), progress=False)


class _RunsWhenUnpickled:
    """Pickles as "create this file": a loader that unpickles objects would run it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_resume_uses_the_nodes_safe_loader_and_message(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    raw = tiny_config(data_root, out, schedule={"iterations": 1})
    config, hierarchy = load_config(write_config(tmp_path / "run.yaml", raw))
    train(config, hierarchy, progress=False)
    content = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"
    content["metrics"] = {"loss": _RunsWhenUnpickled(marker)}
    pickled = tmp_path / "pickled.pt"
    torch.save(content, pickled)
    with pytest.raises(CheckpointMismatchError, match="pickled.pt: cannot read as a torch checkpoint") as refused:
        train(config, hierarchy, resume=str(pickled), progress=False)
    assert not marker.exists()  # read with weights_only=True: the object was refused, not built
    with pytest.raises(ModelLoadError) as node:
        TorchEngine(pickled)  # what the node's PyTorch backend says about the same file
    assert str(refused.value) == str(node.value)
    assert main(["--config", str(tmp_path / "run.yaml"), "--resume", str(pickled), "--no-progress"]) == 2


def test_heads_without_labelled_pixels_get_a_zero_gradient(tmp_path: Path) -> None:
    """DDP expects a gradient for every parameter in every step: the loss the loop backpropagates
    keeps the heads of classifiers with nothing labelled in the batch in the graph."""
    hierarchy = load_tiny(tmp_path)
    maps = {name: np.full((1, 2), IGNORE, np.uint8) for name in hierarchy.classifier_names}
    maps["root"] = np.zeros((1, 2), np.uint8)  # only the root has labelled pixels
    logits = {n: torch.randn(1, c, 1, 2, requires_grad=True) for n, c in hierarchy.classifier_sizes}
    HierarchicalLoss(hierarchy)(logits, collate_targets([SampleTargets("pixel", maps)])).total.backward()
    assert (logits["root"].grad != 0).any()
    for name in hierarchy.classifier_names[1:]:
        assert logits[name].grad is not None and (logits[name].grad == 0).all(), name


def test_kill_during_checkpointing_leaves_loadable_checkpoints(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    raw = tiny_config(data_root, out, checkpoint={"every": 1, "keep": 3}, schedule={"iterations": 400})
    cfg = write_config(tmp_path / "kill.yaml", raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [PYTHON, "-m", "training.fit.train", "--config", str(cfg), "--no-progress"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(checkpoint_paths(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.37)  # land somewhere in a checkpoint write (one every iteration)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    files = sorted(out.glob("*.pt"))
    assert out / "last.pt" in files and len(files) >= 2
    for path in files:
        assert load_checkpoint(path).training["iteration"] >= 1
    last_iteration = load_checkpoint(out / "last.pt").training["iteration"]
    config, hierarchy = load_config(cfg)
    resumed = train(config, hierarchy, resume=True, stop_after=last_iteration + 1, progress=False)
    assert resumed.iteration == last_iteration + 1
    assert not list(out.glob(".*.tmp*"))


def test_cli_runs_and_rejects_bad_config_before_training(data_root: Path, tmp_path: Path) -> None:
    raw = tiny_config(data_root, tmp_path / "cli", schedule={"iterations": 1})
    raw["loss"] = {"weights": {"root": 1.0, "traffic_sgn": 0.1}}
    cfg = write_config(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError, match=r"bad\.yaml: loss\.weights\.traffic_sgn: unknown classifier"):
        load_config(cfg)
    assert main(["--config", str(cfg), "--no-progress"]) == 2
    assert not (tmp_path / "cli").exists()
    good = write_config(tmp_path / "good.yaml", tiny_config(data_root, tmp_path / "unused", schedule={"iterations": 1}))
    assert main(["--config", str(good), "--out", str(tmp_path / "cli"), "--no-amp", "--no-progress"]) == 0
    written = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())  # the effective config of the run
    assert written["run"]["amp"] is False and written["run"]["out_dir"] == str(tmp_path / "cli")
    assert load_checkpoint(tmp_path / "cli" / "last.pt").training["iteration"] == 1


def _trained_params(data_root: Path, tmp_path: Path, name: str, **sections) -> tuple[dict, dict]:
    raw = tiny_config(data_root, tmp_path / name, schedule={"iterations": 1}, **sections)
    config, hierarchy = load_config(write_config(tmp_path / f"{name}.yaml", raw))
    torch.manual_seed(config.run.seed)  # the weights fit() initialises (training.fit.loop.seed_everything)
    before = {k: v.detach().clone() for k, v in config.model.build(hierarchy, pretrained=None).named_parameters()}
    result = train(config, hierarchy, progress=False)
    return before, {k: v.detach() for k, v in result.model.named_parameters()}


def test_adamw_first_step_moves_every_trained_weight_by_the_learning_rate(data_root: Path, tmp_path: Path) -> None:
    """Adam's first update is lr * g / (|g| + eps): about lr for every weight with a gradient, whatever
    its scale, where SGD's is lr * g (the reason it suits the short schedules of the main job)."""
    plain = {"weight_decay": 0.0, "sub_weight_decay": 0.0, "lr": 1e-3}
    before, adam = _trained_params(data_root, tmp_path, "adamw", optimizer={**plain, "kind": "adamw"})
    _, sgd = _trained_params(data_root, tmp_path, "sgd", optimizer=plain)
    adam_steps = torch.cat([(adam[k] - before[k]).abs().flatten() for k in before])
    moved = adam_steps[adam_steps > 0]
    assert moved.numel() > 0.5 * adam_steps.numel()
    assert torch.quantile(moved, 0.5) == pytest.approx(1e-3, rel=0.05)
    assert moved.max() <= 1e-3 * 1.001
    sgd_steps = torch.cat([(sgd[k] - before[k]).abs().flatten() for k in before])
    assert torch.quantile(sgd_steps[sgd_steps > 0], 0.5) < 0.5e-3  # SGD: proportional to the gradient


def test_trunk_weights_of_zero_keep_the_trunk_out_of_sub_classifier_losses(data_root: Path, tmp_path: Path) -> None:
    subs = ["drivable", "rider", "traffic_sign", "traffic_sign_front"]
    before, after = _trained_params(
        data_root,
        tmp_path,
        "trunk0",
        loss={"weights": {"root": 0.0, **dict.fromkeys(subs, 1.0)}, "trunk_weights": dict.fromkeys(subs, 0.0)},
        optimizer={"weight_decay": 0.0, "sub_weight_decay": 0.0, "momentum": 0.0},
    )
    trunk = [k for k in before if not k.startswith("heads.")]
    assert all(torch.equal(before[k], after[k]) for k in trunk)  # no gradient reached the trunk
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("heads.traffic_sign_front."))


def test_clip_grad_norm_bounds_the_update(data_root: Path, tmp_path: Path) -> None:
    plain = {"weight_decay": 0.0, "sub_weight_decay": 0.0, "momentum": 0.0, "lr": 0.01}
    before, clipped = _trained_params(data_root, tmp_path, "clip", optimizer={**plain, "clip_grad_norm": 1e-3})
    _, free = _trained_params(data_root, tmp_path, "free", optimizer=plain)
    step = torch.cat([(clipped[k] - before[k]).flatten() for k in before]).norm()
    assert step <= 0.01 * 1e-3 * 1.01  # lr x max norm
    assert torch.cat([(free[k] - before[k]).flatten() for k in before]).norm() > 100 * step
