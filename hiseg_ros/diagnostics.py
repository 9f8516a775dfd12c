"""Runtime statistics of the node: rates, latency percentiles, drops, last error. Pure Python.

The node feeds :class:`FrameStats` from two threads (the subscription callback and the inference
worker) and turns :meth:`FrameStats.snapshot` into a ``diagnostic_msgs/DiagnosticStatus`` once a
second. Time comes from a clock function (``time.monotonic`` by default) so tests can drive it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ERROR", "OK", "WARN", "FrameStats", "Snapshot"]

OK, WARN, ERROR = 0, 1, 2
"""diagnostic_msgs/DiagnosticStatus levels (the message's byte constants, without importing ROS)."""


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self._times) / self.window


@dataclass(frozen=True)
class Snapshot:
    """Everything the diagnostics message reports, at one instant."""

    level: int
    message: str
    input_rate: float
    processed_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    inference_p50_ms: float
    received: int
    processed: int
    dropped: int
    skipped: int
    bad_inputs: int
    errors: int
    last_error: str

    def values(self) -> list[tuple[str, str]]:
        """(key, value) pairs for ``DiagnosticStatus.values``."""
        return [
            ("input_rate_hz", f"{self.input_rate:.2f}"),
            ("processed_rate_hz", f"{self.processed_rate:.2f}"),
            ("latency_p50_ms", f"{self.latency_p50_ms:.1f}"),
            ("latency_p95_ms", f"{self.latency_p95_ms:.1f}"),
            ("inference_p50_ms", f"{self.inference_p50_ms:.1f}"),
            ("frames_received", str(self.received)),
            ("frames_processed", str(self.processed)),
            ("frames_dropped", str(self.dropped)),
            ("frames_skipped_no_subscribers", str(self.skipped)),
            ("bad_inputs", str(self.bad_inputs)),
            ("processing_errors", str(self.errors)),
            ("last_error", self.last_error),
        ]


class FrameStats:
    """Thread-safe counters of one node.

    - *received*: every input message; *dropped*: received but overwritten by a newer one before
      the worker took it (latest-frame-only policy); *skipped*: taken but not processed because no
      output had subscribers; *processed*: outputs published.
    - latency: from message arrival to the last output published, over the last ``window_frames``.
    - level: WARN while a bad input (or ERROR while a processing error) happened within the last
      ``hold_s`` seconds, OK otherwise.
    """

    def __init__(
        self,
        rate_window_s: float = 5.0,
        window_frames: int = 200,
        hold_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._in = _Rate(rate_window_s)
        self._out = _Rate(rate_window_s)
        self._latency: deque[float] = deque(maxlen=window_frames)
        self._inference: deque[float] = deque(maxlen=window_frames)
        self.hold_s = hold_s
        self.received = self.processed = self.dropped = self.skipped = self.bad_inputs = self.errors = 0
        self.last_error = ""
        self._last_bad: float | None = None
        self._last_fail: float | None = None

    def now(self) -> float:
        return self._clock()

    def on_received(self, overwrote_pending: bool) -> float:
        """A message arrived; returns its arrival time (for the latency)."""
        with self._lock:
            now = self._clock()
            self.received += 1
            self._in.add(now)
            if overwrote_pending:
                self.dropped += 1
            return now

    def on_skipped(self) -> None:
        with self._lock:
            self.skipped += 1

    def on_processed(self, arrival: float, inference_s: float) -> None:
        with self._lock:
            now = self._clock()
            self.processed += 1
            self._out.add(now)
            self._latency.append(now - arrival)
            self._inference.append(inference_s)

    def on_bad_input(self, reason: str) -> None:
        with self._lock:
            self.bad_inputs += 1
            self.last_error = f"bad input: {reason}"
            self._last_bad = self._clock()

    def on_error(self, reason: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"processing error: {reason}"
            self._last_fail = self._clock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self._clock()
            lat = np.asarray(self._latency, dtype=np.float64) * 1e3
            inf = np.asarray(self._inference, dtype=np.float64) * 1e3
            p50, p95 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 95))) if lat.size else (0.0, 0.0)
            inf50 = float(np.percentile(inf, 50)) if inf.size else 0.0
            if self._last_fail is not None and now - self._last_fail <= self.hold_s:
                level, message = ERROR, self.last_error
            elif self._last_bad is not None and now - self._last_bad <= self.hold_s:
                level, message = WARN, self.last_error
            else:
                level, message = OK, "ok"
            return Snapshot(
                level=level,
                message=message,
                input_rate=self._in.rate(now),
                processed_rate=self._out.rate(now),
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                inference_p50_ms=inf50,
                received=self.received,
                processed=self.processed,
                dropped=self.dropped,
                skipped=self.skipped,
                bad_inputs=self.bad_inputs,
                errors=self.errors,
                last_error=self.last_error,
            )
