"""DistributedDataParallel on the CPU: 2 processes with gloo, set up exactly as torchrun would
(RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), all traffic on 127.0.0.1.

After a few iterations both replicas must hold bit-identical weights and buffers: each process
saves the network ``train()`` returned, and the test compares the two with each other and with
the checkpoint rank 0 wrote."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_training import make_tiny_data, tiny_config, write_config

from hiseg_ros.engines.checkpoint import load_checkpoint
from training import REPO
from training.fit.log import read_csv

# One torchrun-style process: train, then save the replica this process ends with.
RANK_SCRIPT = """
import sys
import torch
from training.fit.config import load_config
from training.fit.train import train
config, hierarchy = load_config(sys.argv[1])
result = train(config, hierarchy, progress=False)
torch.save(result.model.state_dict(), sys.argv[2])
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_replicas(tmp_path: Path) -> None:
    data = make_tiny_data(tmp_path / "data")
    out = tmp_path / "ddp"
    raw = tiny_config(data, out, schedule={"iterations": 3}, checkpoint={"every": 2, "keep": 2})
    cfg = write_config(tmp_path / "ddp.yaml", raw)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "lo",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        replica = tmp_path / f"replica{rank}.pt"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK_SCRIPT, str(cfg), str(replica)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            outputs.append((p.returncode, stdout.decode(), stderr.decode()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for rank, (code, _, err) in enumerate(outputs):
        assert code == 0, f"rank {rank} failed:\n{err[-3000:]}"

    replicas = [torch.load(tmp_path / f"replica{r}.pt", weights_only=True) for r in range(2)]
    ckpt = load_checkpoint(out / "last.pt")
    saved = ckpt.net.state_dict()
    assert replicas[0].keys() == replicas[1].keys() == saved.keys()
    assert any("running_mean" in k for k in saved)  # BatchNorm buffers are compared too
    for key, value in replicas[0].items():
        assert torch.equal(value, replicas[1][key]), f"replicas differ in {key}"
        assert torch.equal(value, saved[key]), f"rank 0's network differs from its checkpoint in {key}"
    assert ckpt.training["iteration"] == 3 and ckpt.training["world_size"] == 2
    rows = read_csv(out / "train_log.csv")  # written by rank 0 only: one row per iteration
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
