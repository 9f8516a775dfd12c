"""The node in its own process, for tests, benchmarks and the live bag evaluation, with DDS on loopback.

- :func:`ensure_loopback_env` applies scripts/ros_env.sh to this process: tests, benchmarks and
  the bag evaluator start DDS on development machines, where every byte must stay on loopback.
  The shell script is the one source of those settings; this reads what it exports instead of
  repeating them. Never used on a vehicle.
- :func:`launch_ros_args` is the ``--ros-args`` command line launch/hiseg.launch.py gives the node
  (tests/training/evaluation/test_launch_file.py checks it against the launch file), :func:`node_command` the
  whole command (``python -m hiseg_ros.node --ros-args ...``).
- :class:`NodeProcess` starts that command with the loopback environment and its log in a file,
  waits for a readiness condition (failing with the log's tail when the node exits first) and
  stops it the way launch does: SIGINT, then a kill when it does not exit in time.

No ROS import here: tests/conftest.py runs this before anything imports rclpy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hiseg_ros.messages import NODE_NAME
from training import REPO

PROFILE = REPO / "config" / "dds" / "fastdds_loopback.xml"
PARAMS_FILE = REPO / "config" / "hiseg.yaml"  # the launch file's default params_file
_ENV_PREFIXES = ("ROS_", "FASTDDS_", "RMW_", "AMENT_", "HISEG_")


def ensure_loopback_env() -> None:
    """Export scripts/ros_env.sh's variables unless this process already has them."""
    if (
        os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"
        and os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") == str(PROFILE)
        and os.environ.get("ROS_DOMAIN_ID")
    ):
        return
    script = REPO / "scripts" / "ros_env.sh"
    out = subprocess.run(
        ["bash", "-c", f'source "{script}" >/dev/null && env -0'], check=True, capture_output=True
    ).stdout.decode()
    for item in out.split("\0"):
        key, _, value = item.partition("=")
        if key.startswith(_ENV_PREFIXES):
            os.environ[key] = value
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") != str(PROFILE):
        raise RuntimeError("scripts/ros_env.sh did not set up the loopback-only DDS profile")


def launch_ros_args(
    model: str | Path,
    image_topic: str,
    params_file: str | Path | None = PARAMS_FILE,
    *,
    node_name: str = NODE_NAME,
    namespace: str = "",
    compressed: bool = False,
    use_sim_time: bool = False,
    log_level: str = "info",
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``--ros-args`` items launch/hiseg.launch.py gives the node for these launch arguments, then ``extra``.

    In launch_ros's order: the log level, the node name, the namespace (``""``: none, the root),
    the parameter file (``None``: none, the node's defaults), the ``model_path``,
    ``use_compressed`` (the camera topic is then ``<image_topic>/compressed``) and
    ``use_sim_time`` overrides and the ``image`` remapping. Later items override earlier ones.
    """
    ros = ["--log-level", log_level, "-r", f"__node:={node_name}"]
    if namespace:
        ros += ["-r", f"__ns:=/{namespace.lstrip('/')}"]
    if params_file is not None:
        ros += ["--params-file", str(params_file)]
    ros += ["-p", f"model_path:={model}", "-p", f"use_compressed:={_bool(compressed)}"]
    ros += ["-p", f"use_sim_time:={_bool(use_sim_time)}", "-r", f"image:={image_topic}"]
    return ros + list(extra)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def node_command(ros_args: Sequence[str]) -> list[str]:
    """``python -m hiseg_ros.node --ros-args ...`` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", "hiseg_ros.node", "--ros-args", *ros_args]


@dataclass
class NodeProcess:
    """A running ``python -m hiseg_ros.node``; its stdout and stderr go to ``log``.

    A context manager: leaving the ``with`` block stops the node (:meth:`stop`).
    """

    command: list[str]
    log: Path
    proc: subprocess.Popen

    @classmethod
    def start(cls, ros_args: Sequence[str], log: str | Path) -> NodeProcess:
        """Start the node with loopback DDS (:func:`ensure_loopback_env`), unbuffered logging into ``log``."""
        ensure_loopback_env()
        log = Path(log)
        command = node_command(ros_args)
        # PYTHONFAULTHANDLER: a crash of the node (a signal in native code) leaves its Python stack in ``log``
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0", PYTHONFAULTHANDLER="1")
        with open(log, "wb") as fh:
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
        return cls(command, log, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        """The exit code, or None while the node runs."""
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the node to exit by itself (``subprocess.TimeoutExpired`` after ``timeout`` s)."""
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the node's log (for error messages)."""
        return "\n".join(self.log_text().strip().splitlines()[-lines:])

    def check_running(self, when: str = "") -> None:
        """RuntimeError with the log's tail when the node has exited (``when``: e.g. "during start-up")."""
        code = self.poll()
        if code is not None:
            raise RuntimeError(f"the node exited with code {code}{' ' + when if when else ''}:\n{self.log_tail()}")

    def wait_ready(
        self, ready: Callable[[], bool], timeout: float, what: str | Callable[[], str], every: float = 0.1
    ) -> None:
        """Poll ``ready()`` until true; RuntimeError naming ``what`` the node did not do, with the log's tail,
        when it exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running("during start-up")
            if ready():
                return
            if time.monotonic() > deadline:
                described = what() if callable(what) else what
                raise RuntimeError(f"the node did not {described} within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(every)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGINT) -> int:
        """Stop the node with ``sig`` (SIGINT as Ctrl-C and launch do, or SIGTERM), killing it when it
        has not exited after ``timeout`` s; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
