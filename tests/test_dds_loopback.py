"""The project's ROS environment keeps every DDS byte on loopback.

Two real rclpy processes exchange images under scripts/ros_env.sh's settings while
strace records every datagram the publisher sends: all of them must go to 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

PUBLISHER = """
import time, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("loopback_probe_pub")
pub = node.create_publisher(Image, "loopback_probe", 1)
msg = Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(64 * 192))
end = time.monotonic() + 6.0
while time.monotonic() < end:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.05)
rclpy.shutdown()
"""

SUBSCRIBER = """
import time, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("loopback_probe_sub")
got = []
node.create_subscription(Image, "loopback_probe", lambda m: got.append(m.width), 1)
end = time.monotonic() + 5.0
while time.monotonic() < end and len(got) < 5:
    rclpy.spin_once(node, timeout_sec=0.1)
print(len(got))
rclpy.shutdown()
"""


def test_environment_selects_loopback_settings():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    profile = Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"])
    text = profile.read_text()
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text
    assert re.findall(r"<address>([^<]+)</address>", text) and set(re.findall(r"<address>([^<]+)</address>", text)) == {
        "127.0.0.1"
    }
    assert 0 < int(os.environ["ROS_DOMAIN_ID"]) <= 101
    assert Path(os.environ["ROS_LOG_DIR"]).is_dir()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_publisher_sends_only_to_loopback(tmp_path: Path):
    trace = tmp_path / "trace.txt"
    pub = subprocess.Popen(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=sendto,sendmsg,sendmmsg,connect",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            PUBLISHER,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        sub = subprocess.run(
            [sys.executable, "-c", SUBSCRIBER], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        pub.wait(timeout=60)
    assert sub.returncode == 0, sub.stderr
    assert int(sub.stdout.strip().splitlines()[-1]) >= 1, "no image crossed between the processes"
    destinations = re.findall(r'sin_addr=inet_addr\("([0-9.]+)"\)', trace.read_text())
    assert destinations, "strace saw no datagrams"
    assert set(destinations) == {"127.0.0.1"}, f"DDS traffic left loopback: {sorted(set(destinations))}"
