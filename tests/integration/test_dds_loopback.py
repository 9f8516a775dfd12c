"""The project's ROS environment keeps every DDS byte on loopback.

Two real rclpy processes exchange camera-sized images under scripts/ros_env.sh's settings while
strace records every datagram the publisher sends: all of them must go to 127.0.0.1, and the
images themselves must travel over shared memory, not as UDP fragments (which cost latency and
lose whole best-effort frames when one fragment is dropped).
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
msg = Image(height=512, width=1024, encoding="rgb8", step=3072, data=bytes(512 * 3072))
sent = 0
end = time.monotonic() + 6.0
while time.monotonic() < end:
    pub.publish(msg)
    sent += 1
    rclpy.spin_once(node, timeout_sec=0.05)
print(sent)
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
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sub = subprocess.run(
            [sys.executable, "-c", SUBSCRIBER], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        pub_out, _ = pub.communicate(timeout=60)
    assert sub.returncode == 0, sub.stderr
    received = int(sub.stdout.strip().splitlines()[-1])
    assert received >= 1, "no image crossed between the processes"
    text = trace.read_text()
    destinations = re.findall(r'sin_addr=inet_addr\("([0-9.]+)"\)', text)
    assert destinations, "strace saw no datagrams"
    assert set(destinations) == {"127.0.0.1"}, f"DDS traffic left loopback: {sorted(set(destinations))}"
    udp_bytes = sum(int(n) for n in re.findall(r"^\d+\s+send(?:to|msg)\(.*\) = (\d+)$", text, re.M))
    image_bytes = 512 * 3072
    published = int(pub_out.strip().splitlines()[-1])
    assert published >= received
    # Over UDP every received image would add ~1.5 MB of datagrams; discovery and heartbeats for
    # the whole run stay far below one image.
    assert udp_bytes < image_bytes, f"{udp_bytes} bytes of UDP for {published} images: images are not on shared memory"
