"""Build the package with colcon into a temporary workspace and use the installed copy.

Catches what a source-tree test run cannot: a missing data_files entry, a console script
that is not installed, a module left out of the package list.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    colcon = Path(sys.executable).with_name("colcon")
    env = dict(os.environ, COLCON_HOME=str(ws / ".colcon"))
    result = subprocess.run(
        [
            str(colcon),
            "--log-base",
            str(ws / "log"),
            "build",
            "--paths",
            str(REPO),  # exactly this package: no crawling into .venv or test fixtures
            "--build-base",
            str(ws / "build"),
            "--install-base",
            str(ws / "install"),
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout}\n{result.stderr}"
    return ws / "install" / "hiseg_ros"


def _site_packages(prefix: Path) -> Path:
    found = sorted(prefix.glob("lib/python3*/site-packages"))
    assert found, f"no site-packages under {prefix}"
    return found[0]


def test_installed_package_imports_from_the_install_space(install: Path):
    env = dict(os.environ, PYTHONPATH=str(_site_packages(install)))
    code = "import hiseg_ros, hiseg_ros.hierarchy; print(hiseg_ros.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=install, env=env, capture_output=True, text=True, check=True
    )
    assert Path(result.stdout.strip()).is_relative_to(install), result.stdout


def test_data_files_are_installed(install: Path):
    share = install / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "hiseg_ros").is_file()
    assert (share / "hiseg_ros" / "package.xml").is_file()
    for rel in ["config/hierarchies", "config/dds"]:
        src = sorted(p.name for p in (REPO / rel).iterdir() if p.is_file())
        dst = sorted(p.name for p in (share / "hiseg_ros" / rel).iterdir())
        assert src and src == dst, rel
    for pattern in ["launch/*.launch.py", "config/*.yaml", "config/*.rviz"]:
        for f in REPO.glob(pattern):
            assert (share / "hiseg_ros" / f.relative_to(REPO)).is_file(), f


def test_console_scripts_are_installed_and_run(install: Path):
    script = install / "lib" / "hiseg_ros" / "hierarchy_info"
    assert script.is_file()
    env = dict(os.environ, PYTHONPATH=str(_site_packages(install)))
    hierarchy = install / "share" / "hiseg_ros" / "config" / "hierarchies" / "iv2018.yaml"
    result = subprocess.run(
        [sys.executable, str(script), str(hierarchy)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "classifier traffic_sign_front (under traffic-sign-front): 43 classes" in result.stdout


def test_colcon_test_collects_only_the_runtime_tests(install: Path):
    """``colcon test`` on a vehicle runs pytest in the package with its default selection: the runtime
    tests (tests/runtime), not the training ones, whose dependencies package.xml does not declare."""
    ws = install.parents[1]
    colcon = Path(sys.executable).with_name("colcon")
    env = dict(os.environ, COLCON_HOME=str(ws / ".colcon"))
    cmd = [str(colcon), "--log-base", str(ws / "test_log"), "test", "--paths", str(REPO)]
    cmd += ["--build-base", str(ws / "build"), "--install-base", str(ws / "install")]
    cmd += ["--pytest-args", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=900, check=False)
    log = ws / "test_log" / "latest_test" / "hiseg_ros" / "stdout_stderr.log"
    text = log.read_text() if log.is_file() else result.stdout + result.stderr
    collected = [line.split("::")[0] for line in text.splitlines() if "::" in line and line.startswith("tests/")]
    assert collected, f"colcon test collected nothing:\n{result.stdout}\n{result.stderr}\n{text[-3000:]}"
    assert {path.split("/")[1] for path in collected} == {"runtime"}, sorted(set(collected))
    assert "tests/runtime/test_package_xml.py" in collected
