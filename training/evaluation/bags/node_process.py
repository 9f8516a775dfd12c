"""Apply scripts/ros_env.sh to this process: loopback-only DDS before anything imports rclpy.

Tests, benchmarks and the bag evaluator start DDS on development machines, where every byte must
stay on loopback. The shell script is the one source of those
settings; this reads what it exports instead of repeating them. Never used on a vehicle.
"""

from __future__ import annotations

import os
import subprocess

from training import REPO

PROFILE = REPO / "config" / "dds" / "fastdds_loopback.xml"
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
