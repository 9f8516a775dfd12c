"""hiseg_ros.diagnostics with a driven clock: input frequency, stale input, header-stamp delays, in the
key names and messages of diagnostic_updater (the node test checks the same over DDS)."""

from __future__ import annotations

from hiseg_ros.diagnostics import ERROR, OK, WARN, FrameStats, InputLimits

LIMITS = InputLimits(min_frequency=10.0, max_frequency=30.0, tolerance=0.1, window_size=2, stale_warn_s=1.0,
                     stale_error_s=3.0, min_delay_s=-0.5, max_delay_s=0.5)  # fmt: skip


def _stats() -> tuple[FrameStats, list[float]]:
    now = [0.0]
    return FrameStats(clock=lambda: now[0], limits=LIMITS), now


def _frames(stats: FrameStats, now: list[float], hz: float, seconds: float, delay: float = 0.05) -> None:
    for _ in range(round(hz * seconds)):
        now[0] += 1.0 / hz
        stats.on_received(False, delay)


def test_no_input_warns_then_errors():
    stats, now = _stats()
    now[0] = 0.5
    snap = stats.snapshot()
    assert snap.level == WARN and snap.message == "No events recorded."  # nothing in the window, not stale yet
    values = dict(snap.values())
    assert values["Events in window"] == "0" and values["Minimum acceptable frequency (Hz)"] == "9.000000"
    assert values["Maximum acceptable frequency (Hz)"] == "33.000000"
    now[0] = 1.5
    snap = stats.snapshot()
    assert snap.level == WARN and "Input stale: no input frame yet for 1.5 s" in snap.message
    now[0] = 3.5
    snap = stats.snapshot()
    assert snap.level == ERROR and "Input stale" in snap.message


def test_the_right_rate_is_ok_a_low_rate_warns_and_a_dead_camera_goes_stale():
    stats, now = _stats()
    _frames(stats, now, 20.0, 1.0)
    stats.snapshot()
    _frames(stats, now, 20.0, 1.0)
    snap = stats.snapshot()
    values = dict(snap.values())
    assert snap.level == OK and snap.message == "ok", snap.message
    assert float(values["Actual frequency (Hz)"]) == 20.0 and values["Events in window"] == "40"
    assert values["Latest timestamp delay:"] == "0.050000"
    _frames(stats, now, 2.0, 2.0)
    _frames(stats, now, 2.0, 2.0)
    snap = stats.snapshot()
    assert snap.level == WARN and snap.message == "Frequency too low.", snap.message
    _frames(stats, now, 100.0, 1.0)
    stats.snapshot()
    _frames(stats, now, 100.0, 1.0)
    assert stats.snapshot().message == "Frequency too high."
    _frames(stats, now, 20.0, 2.0)
    stats.snapshot()
    now[0] += 1.5  # the camera dies: the window (2 snapshots) still holds frames
    snap = stats.snapshot()
    assert snap.level == WARN and snap.message == "Input stale: no input frame for 1.5 s", snap.message  # 40/3.5 Hz
    now[0] += 2.0
    snap = stats.snapshot()
    assert snap.level == ERROR and "Input stale: no input frame for 3.5 s" in snap.message


def test_header_stamps_too_old_or_from_the_future_are_errors():
    stats, now = _stats()
    _frames(stats, now, 20.0, 1.0, delay=2.0)
    snap = stats.snapshot()
    assert snap.level == ERROR and "Timestamps too far in past seen." in snap.message
    assert dict(snap.values())["Late diagnostic update count:"] == "1"
    _frames(stats, now, 20.0, 1.0, delay=-1.0)
    snap = stats.snapshot()
    assert "Timestamps too far in future seen." in snap.message
    assert dict(snap.values())["Early diagnostic update count:"] == "1"
    _frames(stats, now, 20.0, 1.0)
    assert stats.snapshot().level == OK
    now[0] += 0.5
    assert dict(stats.snapshot().values())["Zero seen diagnostic update count:"] == "1"
