"""hiseg_ros.memory: with retain_freed_memory, buffers of a frame's size are reused, not faulted in again.

Each check runs in a fresh interpreter (the settings are process-wide and cannot be undone): it
allocates and fills three 3 MB buffers (a frame's 1024x1024 rgb8 images), frees them, 40 times,
and counts the minor page faults the kernel reports for the process (``getrusage``). glibc's own
adaptive thresholds keep one buffer of a repeated size; several alive at once are unmapped or
trimmed after every frame.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
from hiseg_ros.memory import retain_freed_memory
if sys.argv[1] == "retain":
    why = retain_freed_memory()
    assert why is None, why
size = 3 * 1024 * 1024
bytearray(size)  # first use maps the memory either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    bufs = [bytearray(size) for _ in range(3)]  # zero-filled: every page is touched
    del bufs
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and Linux page-fault counts")
def test_retained_buffers_are_not_faulted_in_again() -> None:
    pages = 3 * 1024 * 1024 // 4096
    default, retained = _faults("default"), _faults("retain")
    assert default > 40 * pages  # glibc's default: faulted in again every frame
    assert retained < 3 * pages  # reused: at most the first frame's worth
