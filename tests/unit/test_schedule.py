"""The schedule gate with a fake clock: windows, DST, pauses, rate caps."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from zoneinfo import ZoneInfo

import pytest

from pacsmig.apply.schedule import ALWAYS, Gate
from pacsmig.spec.load import spec_from_text
from pacsmig.spec.model import Schedule, ScheduleWindow

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = (0, 1, 2, 3, 4)

SPEC = """\
version: 1
name: t
local: {ae_title: PACSMIG}
source: {kind: dimse, ae_title: SRC, host: 127.0.0.1, port: 104}
destination: {ae_title: DST, host: 127.0.0.1, port: 105}
schedule:
  timezone: Europe/Berlin
  windows:
    - days: [mon, tue, wed, thu, fri]
      start: "19:00"
      end: "07:00"
      max_instances_per_second: 50
      max_mb_per_second: 20
    - days: [sat, sun]
"""


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


def berlin(*args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN, fold=fold)  # type: ignore[misc]


def gate_for(*windows: ScheduleWindow, clock: FakeClock | None = None, **kw: object) -> Gate:
    schedule = Schedule(windows=windows, timezone="Europe/Berlin")
    if clock is None:
        return Gate(schedule)
    return Gate(schedule, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_spec_schedule_windows_and_midnight_span() -> None:
    gate = Gate(spec_from_text(SPEC).schedule)
    night = gate.schedule.windows[0]
    # 2024-03-08 is a Friday: its night runs into Saturday morning.
    assert gate.in_window(berlin(2024, 3, 8, 19, 0)) == night
    assert gate.in_window(berlin(2024, 3, 8, 18, 59)) is None
    assert gate.in_window(berlin(2024, 3, 9, 6, 59)) in (night, gate.schedule.windows[1])
    # Monday 06:00 is the tail of Sunday's night, and Sunday has no night window.
    assert gate.in_window(berlin(2024, 3, 11, 6, 0)) is None
    # Tuesday 06:59 is the tail of Monday's night; 07:00 is outside.
    assert gate.in_window(berlin(2024, 3, 12, 6, 59)) == night
    assert gate.in_window(berlin(2024, 3, 12, 7, 0)) is None
    assert gate.next_open(berlin(2024, 3, 12, 7, 0)) == berlin(2024, 3, 12, 19, 0)
    # Instants are compared as instants: the same moment in UTC is in the same window.
    assert gate.in_window(berlin(2024, 3, 12, 6, 59).astimezone(dt.UTC)) == night


def test_friday_night_window_alone_extends_into_saturday() -> None:
    gate = gate_for(ScheduleWindow(days=(4,), start=19 * 60, end=7 * 60))
    assert gate.in_window(berlin(2024, 3, 9, 6, 30)) is not None  # Saturday morning
    assert gate.in_window(berlin(2024, 3, 8, 6, 30)) is None  # Friday morning: Thursday's
    assert gate.next_open(berlin(2024, 3, 9, 7, 0)) == berlin(2024, 3, 15, 19, 0)


def test_next_open_wraps_the_week() -> None:
    gate = gate_for(ScheduleWindow(days=(0,), start=8 * 60, end=9 * 60))
    # Monday 09:00, just closed: next Monday.
    assert gate.next_open(berlin(2024, 3, 11, 9, 0)) == berlin(2024, 3, 18, 8, 0)
    assert gate.next_open(berlin(2024, 3, 17, 23, 59)) == berlin(2024, 3, 18, 8, 0)
    inside = berlin(2024, 3, 18, 8, 30)
    assert gate.next_open(inside) == inside


def test_dst_spring_forward_window_in_the_gap_opens_when_clocks_jump() -> None:
    # 2024-03-31 Europe/Berlin: 02:00 CET -> 03:00 CEST; a 02:30 start never happens.
    gate = gate_for(ScheduleWindow(days=(6,), start=2 * 60 + 30, end=4 * 60))
    opens = gate.next_open(berlin(2024, 3, 30, 12, 0))
    assert opens.astimezone(dt.UTC) == dt.datetime(2024, 3, 31, 1, 0, tzinfo=dt.UTC)
    assert (opens.hour, opens.minute) == (3, 0)
    # A window wholly inside the gap does not happen that day: the next Sunday it does.
    short = gate_for(ScheduleWindow(days=(6,), start=2 * 60 + 10, end=2 * 60 + 50))
    assert short.next_open(berlin(2024, 3, 30, 12, 0)) == berlin(2024, 4, 7, 2, 10)


def test_dst_fall_back_repeated_hour_is_in_the_window_twice() -> None:
    # 2024-10-27 Europe/Berlin: 03:00 CEST -> 02:00 CET; 02:00-02:59 happens twice.
    gate = gate_for(ScheduleWindow(days=(6,), start=2 * 60, end=2 * 60 + 30))
    first = berlin(2024, 10, 27, 2, 10, fold=0)
    second = berlin(2024, 10, 27, 2, 10, fold=1)
    assert second.astimezone(dt.UTC) - first.astimezone(dt.UTC) == dt.timedelta(hours=1)
    assert gate.in_window(first) is not None and gate.in_window(second) is not None
    between = berlin(2024, 10, 27, 2, 45, fold=0)
    assert gate.in_window(between) is None
    reopen = gate.next_open(between)
    assert reopen.astimezone(dt.UTC) == dt.datetime(2024, 10, 27, 1, 0, tzinfo=dt.UTC)
    # A window starting at 01:30 is open across the jump back and never reopens that night.
    long = gate_for(ScheduleWindow(days=(6,), start=60 + 30, end=2 * 60 + 30))
    late = berlin(2024, 10, 27, 2, 40, fold=0)
    assert long.in_window(late) is None
    assert long.next_open(late).astimezone(dt.UTC) == dt.datetime(2024, 10, 27, 1, 0, tzinfo=dt.UTC)


def test_no_windows_is_always_open_and_uncapped() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    gate = gate_for(clock=clock)
    assert gate.in_window(clock.now) is ALWAYS
    assert gate.next_open(clock.now) == clock.now
    stop = threading.Event()
    assert gate.wait_for_window(stop)
    for _ in range(1000):
        assert gate.throttle(1, 10_000_000, stop)
    assert clock.sleeps == []
    assert gate.describe() == "schedule: any time, no rate cap"


def test_naive_datetimes_are_refused() -> None:
    gate = gate_for(ScheduleWindow())
    with pytest.raises(ValueError, match="timezone-aware"):
        gate.in_window(dt.datetime(2024, 1, 1, 12, 0))


def test_wait_for_window_pauses_until_the_window_opens(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    paused: list[dt.datetime] = []
    gate = gate_for(
        ScheduleWindow(days=WEEKDAYS, start=19 * 60, end=7 * 60),
        clock=clock,
        slice_seconds=60.0,
        on_pause=paused.append,
    )
    seen: list[dt.datetime | None] = []
    sleep = clock.sleep

    def watching_sleep(seconds: float) -> None:
        seen.append(gate.waiting_until())
        sleep(seconds)

    gate._sleep = watching_sleep
    assert gate.waiting_until() == berlin(2024, 3, 12, 19, 0)  # before anyone waits, too
    with caplog.at_level(logging.INFO, logger="pacsmig.apply.schedule"):
        assert gate.wait_for_window(threading.Event())
    assert clock.now == berlin(2024, 3, 12, 19, 0)
    assert max(clock.sleeps) <= 60.0 and len(clock.sleeps) == 7 * 60
    assert set(seen) == {berlin(2024, 3, 12, 19, 0)}
    assert gate.waiting_until() is None
    assert paused == [berlin(2024, 3, 12, 19, 0)]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["outside the schedule: paused until Tue 2024-03-12 19:00 CET"]
    # Inside the window it returns at once.
    before = len(clock.sleeps)
    assert gate.wait_for_window(threading.Event())
    assert len(clock.sleeps) == before


def test_wait_for_window_returns_false_when_stopped() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    gate = gate_for(ScheduleWindow(days=WEEKDAYS, start=19 * 60, end=7 * 60), clock=clock)
    stop = threading.Event()
    sleep = clock.sleep

    def stop_after_ten(seconds: float) -> None:
        sleep(seconds)
        if len(clock.sleeps) == 10:
            stop.set()

    gate._sleep = stop_after_ten
    assert gate.wait_for_window(stop) is False
    assert len(clock.sleeps) == 10
    assert gate.waiting_until() == berlin(2024, 3, 12, 19, 0)  # still closed


def test_throttle_caps_instances_per_second() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    gate = gate_for(ScheduleWindow(max_instances_per_second=10), clock=clock)
    stop = threading.Event()
    start = clock.now
    for _ in range(25):
        assert gate.throttle(1, 0, stop)
    # One second's worth passes at once, the other 15 take 1.5 s.
    assert (clock.now - start).total_seconds() == pytest.approx(1.5)


def test_throttle_caps_megabytes_per_second() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    gate = gate_for(
        ScheduleWindow(max_mb_per_second=20, max_instances_per_second=1000), clock=clock
    )
    stop = threading.Event()
    start = clock.now
    for _ in range(5):
        assert gate.throttle(1, 10_000_000, stop)
    assert (clock.now - start).total_seconds() == pytest.approx(1.5)
    # An instance bigger than the bucket is still paid for in full.
    start = clock.now
    assert gate.throttle(1, 100_000_000, stop)
    assert (clock.now - start).total_seconds() == pytest.approx(5.0)


def test_window_ending_mid_throttle_waits_for_the_next_window() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 6, 59, 59))
    gate = gate_for(
        ScheduleWindow(days=WEEKDAYS, start=19 * 60, end=7 * 60, max_instances_per_second=1),
        clock=clock,
        slice_seconds=30.0,
    )
    stop = threading.Event()
    assert gate.throttle(1, 0, stop)  # the bucket's one token
    assert clock.now == berlin(2024, 3, 12, 6, 59, 59)
    assert gate.throttle(5, 0, stop)
    assert clock.now >= berlin(2024, 3, 12, 19, 0)
    assert clock.now < berlin(2024, 3, 12, 19, 0, 30)


def test_throttle_returns_false_when_stopped() -> None:
    clock = FakeClock(berlin(2024, 3, 12, 12, 0))
    gate = gate_for(ScheduleWindow(max_instances_per_second=1), clock=clock)
    stop = threading.Event()
    assert gate.throttle(1, 0, stop)
    stop.set()
    assert gate.throttle(1, 0, stop) is False


def test_threads_share_one_cap() -> None:
    # Real clock, small numbers: 3 threads x 10 instances under 20/s. The first 20 pass at
    # once, the other 10 need half a second whoever sends them.
    gate = Gate(Schedule(windows=(ScheduleWindow(max_instances_per_second=20),)))
    stop = threading.Event()
    results: list[bool] = []

    def worker() -> None:
        for _ in range(10):
            results.append(gate.throttle(1, 0, stop))

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - started
    assert results == [True] * 30
    assert 0.45 <= elapsed < 3.0


def test_describe_names_zone_days_hours_and_caps() -> None:
    gate = Gate(spec_from_text(SPEC).schedule)
    assert gate.describe() == (
        "schedule (Europe/Berlin): Mon-Fri 19:00-07:00 (next day), at most 50 instances/s "
        "and 20 MB/s; Sat-Sun all day, no rate cap"
    )
    odd = gate_for(ScheduleWindow(days=(0, 2, 3), start=8 * 60, end=9 * 60 + 30))
    assert odd.describe() == "schedule (Europe/Berlin): Mon,Wed-Thu 08:00-09:30, no rate cap"
