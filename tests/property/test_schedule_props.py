"""Properties of the schedule gate over random windows, zones (with odd DST rules) and times."""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pacsmig.apply.schedule import BYTES_PER_MB, Gate
from pacsmig.spec.model import Schedule, ScheduleWindow

# Zones with DST both ways, a 30-minute DST shift (Lord Howe), none at all, and southern
# hemisphere rules.
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "UTC",
)

windows = st.builds(
    ScheduleWindow,
    days=st.sets(st.integers(0, 6), min_size=1).map(lambda s: tuple(sorted(s))),
    start=st.integers(0, 24 * 60),
    end=st.integers(0, 24 * 60),
)
schedules = st.builds(
    Schedule,
    windows=st.lists(windows, min_size=1, max_size=3).map(tuple),
    timezone=st.sampled_from(ZONES),
)
instants = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2030, 12, 31),
    timezones=st.just(dt.UTC),
)


@settings(max_examples=150, deadline=None)
@given(schedules, instants, st.lists(st.floats(0, 1), max_size=8))
def test_next_open_is_the_first_instant_inside_a_window(
    schedule: Schedule, at: dt.datetime, fractions: list[float]
) -> None:
    gate = Gate(schedule)
    opens = gate.next_open(at)
    assert opens >= at
    assert gate.in_window(opens) is not None
    gap = opens - at
    if gap > dt.timedelta(0):
        assert gate.in_window(at) is None
        # Nothing before it is inside: sampled points and the second before.
        for f in fractions:
            assert gate.in_window(at + gap * f * 0.999999) is None
        assert gate.in_window(max(at, opens - dt.timedelta(seconds=1))) is None


@settings(max_examples=200, deadline=None)
@given(
    schedules,
    st.data(),
    st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 12, 31)),
    st.integers(0, 1),
)
def test_no_wall_time_inside_a_window_is_reported_outside(
    schedule: Schedule, data: st.DataObject, around: dt.date, fold: int
) -> None:
    window = data.draw(st.sampled_from(schedule.windows))
    day = around + dt.timedelta(days=(window.days[0] - around.weekday()) % 7)
    length = window.end - window.start
    if length <= 0:
        length += 24 * 60
    offset = data.draw(st.integers(0, length - 1))
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=window.start + offset)
    seconds = data.draw(st.integers(0, 59))
    wall += dt.timedelta(seconds=seconds)
    zone = ZoneInfo(schedule.timezone or "UTC")
    aware = wall.replace(tzinfo=zone, fold=fold)
    # Wall times skipped by a DST jump forward name no instant.
    assume(aware.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == wall)
    assert Gate(schedule).in_window(aware) is not None


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2024, 6, 3, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.5, 500),
    st.floats(0.5, 100),
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 30_000_000), st.floats(0, 0.3)),
        min_size=1,
        max_size=120,
    ),
)
def test_rate_never_exceeds_the_cap_by_more_than_one_bucket(
    per_second: float, mb_per_second: float, calls: list[tuple[int, int, float]]
) -> None:
    clock = _Clock()
    gate = Gate(
        Schedule(
            windows=(
                ScheduleWindow(
                    max_instances_per_second=per_second, max_mb_per_second=mb_per_second
                ),
            ),
            timezone="UTC",
        ),
        clock=clock,
        sleep=clock.sleep,
    )
    stop = threading.Event()
    # (time the call returned, instances and MB paid for up to then); the start pays nothing.
    marks = [(clock.now, 0.0, 0.0)]
    instances = mb = 0.0
    for n, nbytes, work in calls:
        clock.sleep(work)  # receiving the next instance takes time too
        assert gate.throttle(n, nbytes, stop)
        instances += n
        mb += nbytes / BYTES_PER_MB
        marks.append((clock.now, instances, mb))
    # Over every stretch between two returns, at most the rate plus one second's bucket.
    for i, (t0, n0, m0) in enumerate(marks):
        for t1, n1, m1 in marks[i + 1 :]:
            seconds = (t1 - t0).total_seconds()
            assert n1 - n0 <= per_second * seconds + per_second + 1e-6
            assert m1 - m0 <= mb_per_second * seconds + mb_per_second + 1e-6
    # And it waits no longer than paying off each cap's debt would take: every second of
    # waiting pays one of them down.
    total = (marks[-1][0] - marks[0][0]).total_seconds()
    work = sum(w for _, _, w in calls)
    debts = (
        max(0.0, instances - per_second) / per_second + max(0.0, mb - mb_per_second) / mb_per_second
    )
    # Sleeps are at least a millisecond, and the clock counts microseconds.
    assert total <= work + debts + 0.002 * len(calls)
