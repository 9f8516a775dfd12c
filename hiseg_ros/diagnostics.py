"""Runtime statistics of the node: rates, latency percentiles, drops, last error, input health. Pure Python.

The node feeds :class:`FrameStats` from two threads (the subscription callback and the inference
worker) and turns :meth:`FrameStats.snapshot` into one ``diagnostic_msgs/DiagnosticStatus`` every
diagnostics period. Time comes from a clock function (``time.monotonic`` by default) so tests can
drive it.

Besides the node's own counters (snake_case keys such as ``frames_received``), the status carries
what ``diagnostic_updater`` users look for, with its key names and messages, merged into one
status the way its composite task merges them (the worst level wins, the messages of every
non-OK part are joined with "; "):

- input frequency (``FrequencyStatus``): "Events in window", "Events since startup", "Duration of
  window (s)", "Actual frequency (Hz)", "Target frequency (Hz)" (when min = max), "Minimum / Maximum
  acceptable frequency (Hz)"; WARN "No events recorded." (ERROR in diagnostic_updater: here the
  stale check below escalates), "Frequency too low." / "Frequency too high." The window is the
  last ``window_size`` snapshots (diagnostics periods).
- stale input: no frame for ``stale_warn_s`` -> WARN, ``stale_error_s`` -> ERROR "Input stale: ...",
  key "Time since last input (s)" (counted from start-up until the first frame).
- header stamps (``TimeStampStatus``): "Earliest timestamp delay:", "Latest timestamp delay:",
  "Earliest / Latest acceptable timestamp delay:", "Late / Early / Zero seen diagnostic update
  count:"; ERROR "Timestamps too far in past seen." / "... in future seen." A period without frames
  is counted ("Zero seen") but not warned about here: the stale check covers it.
- inference latency: ``inference_p50_ms`` / ``inference_p95_ms``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ERROR", "OK", "WARN", "FrameStats", "InputLimits", "Snapshot"]

OK, WARN, ERROR = 0, 1, 2
"""diagnostic_msgs/DiagnosticStatus levels (the message's byte constants, without importing ROS)."""


@dataclass(frozen=True)
class InputLimits:
    """What a healthy input looks like (the node's ``diagnostics.*`` parameters).

    ``min_frequency`` / ``max_frequency`` 0 = no bound on that side; the bounds are widened by
    ``tolerance`` as diagnostic_updater does. Delays are ``now - header.stamp`` in seconds.
    """

    min_frequency: float = 0.0
    max_frequency: float = 0.0
    tolerance: float = 0.1
    window_size: int = 5
    stale_warn_s: float = 2.0
    stale_error_s: float = 5.0
    min_delay_s: float = -1.0
    max_delay_s: float = 5.0


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
    inference_p95_ms: float = 0.0
    health: list[tuple[str, str]] = field(default_factory=list)  # diagnostic_updater-style pairs

    def values(self) -> list[tuple[str, str]]:
        """(key, value) pairs for ``DiagnosticStatus.values``."""
        return [
            *self.health,
            ("inference_p95_ms", f"{self.inference_p95_ms:.1f}"),
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
    - level: the worst of: WARN while a bad input (or ERROR while a processing error) happened
      within the last ``hold_s`` seconds; the input frequency, staleness and header-stamp delays
      against ``limits`` (see the module docstring). Each :meth:`snapshot` is one diagnostics
      period: it closes the frequency and stamp windows.
    """

    def __init__(
        self,
        rate_window_s: float = 5.0,
        window_frames: int = 200,
        hold_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        limits: InputLimits | None = None,
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
        self.limits = limits or InputLimits()
        self._started = clock()
        self._last_input: float | None = None
        self._ticks: deque[tuple[float, int]] = deque([(self._started, 0)], maxlen=self.limits.window_size + 1)
        self._delays: list[float] = []  # header stamp delays since the last snapshot
        self._late = self._early = self._zero_seen = 0

    def now(self) -> float:
        return self._clock()

    def on_received(self, overwrote_pending: bool, stamp_delay_s: float | None = None) -> float:
        """A message arrived (``stamp_delay_s`` = now - its header stamp); returns its arrival time."""
        with self._lock:
            now = self._clock()
            self.received += 1
            self._last_input = now
            if stamp_delay_s is not None:
                self._delays.append(stamp_delay_s)
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
            inf50, inf95 = (float(np.percentile(inf, 50)), float(np.percentile(inf, 95))) if inf.size else (0.0, 0.0)
            parts: list[tuple[int, str]] = []
            if self._last_fail is not None and now - self._last_fail <= self.hold_s:
                parts.append((ERROR, self.last_error))
            elif self._last_bad is not None and now - self._last_bad <= self.hold_s:
                parts.append((WARN, self.last_error))
            health: list[tuple[str, str]] = []
            parts += self._frequency(now, health)
            parts += self._stale(now, health)
            parts += self._stamps(health)
            level = max((lvl for lvl, _ in parts), default=OK)
            worst = [msg for lvl, msg in sorted(parts, key=lambda p: -p[0]) if lvl > OK]
            message = "; ".join(worst) if worst else "ok"
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
                inference_p95_ms=inf95,
                health=health,
            )

    # The three diagnostic_updater-style checks; called with the lock held, once per snapshot.
    def _frequency(self, now: float, values: list[tuple[str, str]]) -> list[tuple[int, str]]:
        lim = self.limits
        self._ticks.append((now, self.received))
        start, count = self._ticks[0]
        events, window = self.received - count, now - start
        freq = events / window if window > 0 else 0.0
        low = lim.min_frequency * (1 - lim.tolerance)
        high = lim.max_frequency * (1 + lim.tolerance) if lim.max_frequency > 0 else math.inf
        if events == 0:  # WARN, not diagnostic_updater's ERROR: the stale check escalates after stale_error_s
            result = (WARN, "No events recorded.")
        elif freq < low:
            result = (WARN, "Frequency too low.")
        elif freq > high:
            result = (WARN, "Frequency too high.")
        else:
            result = (OK, "Desired frequency met")
        values += [
            ("Events in window", str(events)),
            ("Events since startup", str(self.received)),
            ("Duration of window (s)", f"{window:.6f}"),
            ("Actual frequency (Hz)", f"{freq:.6f}"),
        ]
        if lim.min_frequency == lim.max_frequency and lim.min_frequency > 0:
            values.append(("Target frequency (Hz)", f"{lim.min_frequency:.6f}"))
        if lim.min_frequency > 0:
            values.append(("Minimum acceptable frequency (Hz)", f"{low:.6f}"))
        if math.isfinite(high):
            values.append(("Maximum acceptable frequency (Hz)", f"{high:.6f}"))
        return [result]

    def _stale(self, now: float, values: list[tuple[str, str]]) -> list[tuple[int, str]]:
        lim = self.limits
        since = now - (self._last_input if self._last_input is not None else self._started)
        values.append(("Time since last input (s)", f"{since:.3f}"))
        what = "no input frame yet" if self._last_input is None else "no input frame"
        if since >= lim.stale_error_s:
            return [(ERROR, f"Input stale: {what} for {since:.1f} s")]
        if since >= lim.stale_warn_s:
            return [(WARN, f"Input stale: {what} for {since:.1f} s")]
        return []

    def _stamps(self, values: list[tuple[str, str]]) -> list[tuple[int, str]]:
        lim = self.limits
        delays, self._delays = self._delays, []
        parts = []
        if not delays:
            self._zero_seen += 1
        else:
            if max(delays) > lim.max_delay_s:
                self._late += 1
                parts.append((ERROR, "Timestamps too far in past seen."))
            if min(delays) < lim.min_delay_s:
                self._early += 1
                parts.append((ERROR, "Timestamps too far in future seen."))
            values += [
                ("Earliest timestamp delay:", f"{min(delays):.6f}"),
                ("Latest timestamp delay:", f"{max(delays):.6f}"),
            ]
        values += [
            ("Earliest acceptable timestamp delay:", f"{lim.min_delay_s:.6f}"),
            ("Latest acceptable timestamp delay:", f"{lim.max_delay_s:.6f}"),
            ("Late diagnostic update count:", str(self._late)),
            ("Early diagnostic update count:", str(self._early)),
            ("Zero seen diagnostic update count:", str(self._zero_seen)),
        ]
        return parts
