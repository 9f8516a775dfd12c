"""Test session set-up: the project's ROS environment before anything imports rclpy.

The variables come from scripts/ros_env.sh (the one environment script of the project),
so DDS traffic stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST plus the
loopback-only Fast DDS profile), with a per-run ROS_DOMAIN_ID and ROS_LOG_DIR in the tree.
scripts/test.sh sources the script already; this also covers a bare ``pytest`` call.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.evaluation.bags.node_process import PROFILE, REPO, ensure_loopback_env

__all__ = ["PROFILE", "REPO"]


ensure_loopback_env()
assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST", "DDS must stay on loopback in tests"


_FOLDER_MARKERS = ("runtime", "training", "integration")
# Fixtures that export an ONNX model in their set-up (tens of seconds each): their tests are ``slow``,
# so ``--fast`` leaves them to the full suite. exported_model: below; models: tests/runtime/test_engines.py
# and test_decoder_engines.py; exported: tests/training/test_export.py.
_EXPORTING_FIXTURES = frozenset({"exported_model", "models", "exported"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow the folders: tests/runtime -> ``runtime``, tests/training -> ``training``,
    tests/integration -> ``integration`` (``scripts/test.sh --fast`` leaves out the last and ``slow``);
    tests that need an exported model are ``slow``."""
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests).parts
        if parts and parts[0] in _FOLDER_MARKERS:
            item.add_marker(parts[0])
        if _EXPORTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """*A* model for tests that just need one: the random-init iv2018 MobileNetV2 network, exported
    once per session through the real ``python -m training.export --random-init`` command
    (tests/node_helpers.py ``make_model``). Tests of the export itself keep running the command."""
    from node_helpers import make_model

    return make_model(tmp_path_factory.mktemp("exported_model"))


@pytest.fixture
def one_torch_thread():
    """Short trainings in tests: one torch thread (two test trainings on 2 cores thrash), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
