"""Keep freed image buffers in the process: glibc malloc settings for per-frame megabyte allocations.

Why: every frame the node allocates and frees several megabytes in buffers of 0.5-6 MB: the
received image (in DDS, in rcl, in Python), each output array, each serialized output message and
DDS's copies of it. glibc serves an allocation above its mmap threshold (128 KiB at start, raised
dynamically) with a fresh ``mmap`` and returns it with ``munmap``; freed memory at the top of a
heap above the trim threshold (128 KiB) goes back to the OS too. Either way the next frame's
buffers are page-faulted in again, one 4 KiB page at a time: with every output on, about a quarter
of the node's own per-frame work beyond inference on the project's 2-core machine (the numbers
are in docs/BENCHMARKS.md, node section, "Serialized outputs, retained buffers").

:func:`retain_freed_memory` raises both thresholds, so freed buffers stay mapped and the next
frame reuses them: the practice of real-time ROS 2 set-ups (which also lock memory; this does
not). The price: the process keeps its peak heap; its resident size does not shrink after a burst
of large frames. It only applies to glibc (``mallopt``); elsewhere it reports that it did nothing.
"""

from __future__ import annotations

import ctypes

__all__ = ["MMAP_THRESHOLD", "retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``, 32 MiB): buffers up to
#: this size (a 2048x4096 mono8 mask, a 2048x1536 rgb8 image) come from the heap and are reused.
MMAP_THRESHOLD = 32 * 1024 * 1024
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest, 2 GiB of free heap top before trimming


def retain_freed_memory() -> str | None:
    """Apply the settings to this process; ``None`` when applied, else why not (no glibc ``mallopt``)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError) as exc:
        return f"no mallopt in this C library ({exc})"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) != 1:
        return "mallopt refused M_MMAP_THRESHOLD / M_TRIM_THRESHOLD"
    return None
