"""When apply may pull from the source, and how fast: the spec's ``schedule`` as a gate.

A legacy PACS still serves the hospital while it is migrated, so the migration runs in the
windows the spec names (nights, weekends) and at most at the window's rate. Membership is
decided on the local wall clock of the schedule's time zone: "19:00-07:00 on Friday" means
from Friday 19:00 until Saturday 07:00 local time, whatever the UTC offset does in between.
On the day clocks go forward, wall times in the gap never happen (a window there opens at
the first instant after it); on the day they go back, the repeated hour is in a window
both times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pacsmig.spec.model import Schedule, ScheduleWindow

log = logging.getLogger(__name__)

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MINUTES_PER_DAY = 24 * 60
BYTES_PER_MB = 1_000_000  # network rates are quoted in SI megabytes
ALWAYS = ScheduleWindow()  # what in_window() reports when the spec has no windows

# Longest search for the next opening. A window lost to a DST gap reappears a week later,
# so a schedule with any window opens within 15 days; the margin costs nothing.
_HORIZON_DAYS = 400
_CHUNK_DAYS = 8


def local_zone() -> dt.tzinfo:
    """The machine's time zone with its DST rules (not just today's UTC offset)."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        names.append(Path("/etc/timezone").read_text(encoding="ascii").strip())
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").resolve())
        if "/zoneinfo/" in target:
            names.append(target.split("/zoneinfo/", 1)[1])
    for name in names:
        if name:
            with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
                return zoneinfo.ZoneInfo(name)
    with contextlib.suppress(OSError, ValueError), Path("/etc/localtime").open("rb") as fh:
        return zoneinfo.ZoneInfo.from_file(fh, key="localtime")
    # No tz database: a fixed offset is the best available (DST edges are then off by the
    # DST shift, which is all the machine itself knows).
    return dt.datetime.now().astimezone().tzinfo or dt.UTC


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _spans_midnight(w: ScheduleWindow) -> bool:
    return w.end <= w.start


def _wall_in(w: ScheduleWindow, weekday: int, minute: int) -> bool:
    """Whether local wall time (weekday, minute of day) falls in window ``w``."""
    if not _spans_midnight(w):
        return weekday in w.days and w.start <= minute < w.end
    # Spanning midnight: the evening part belongs to its own day, the morning part to the
    # day before's window.
    if weekday in w.days and minute >= w.start:
        return True
    return (weekday - 1) % 7 in w.days and minute < w.end


def _is_capped(w: ScheduleWindow) -> bool:
    return w.max_instances_per_second is not None or w.max_mb_per_second is not None


@dataclass(slots=True)
class _Bucket:
    """Token bucket allowed to go into debt: a charge is taken whole (an instance has
    already arrived when it is paid for) and the caller waits until the balance is back to
    zero, so over any stretch of time at most one bucket more than the rate gets through."""

    rate: float  # tokens per second
    capacity: float
    tokens: float
    at: dt.datetime

    def refill(self, now: dt.datetime) -> None:
        elapsed = (now - self.at).total_seconds()
        if elapsed > 0:  # the wall clock may step back (NTP): never refill negatively
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.at = now

    def wait_seconds(self) -> float:
        # Float rounding leaves debts like -1e-16 after an exact wait: that is paid.
        return 0.0 if self.tokens >= -1e-9 else -self.tokens / self.rate


class Gate:
    """Pauses apply outside the schedule's windows and caps its rate inside them.

    Thread-safe: several retrieval threads share one gate, and the caps hold for all of
    them together.

    Parameters
    ----------
    schedule
        The spec's schedule; no windows means any time, no cap.
    clock
        Returns the current time, timezone-aware (tests inject a fake one).
    sleep
        Sleeps for the given seconds (tests inject one that advances the fake clock).
    slice_seconds
        Longest single sleep, so a stop request is noticed promptly.
    on_pause
        Called once per pause with the time the gate will open (for the CLI to print).
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        sleep: Callable[[float], None] = time.sleep,
        slice_seconds: float = 1.0,
        on_pause: Callable[[dt.datetime], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self.tz: dt.tzinfo = (
            zoneinfo.ZoneInfo(schedule.timezone) if schedule.timezone else local_zone()
        )
        self._clock = clock
        self._sleep = sleep
        self._slice = slice_seconds
        self._on_pause = on_pause
        self._lock = threading.Lock()
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._waiting_until: dt.datetime | None = None
        self._waiters = 0

    # -- where the windows are -------------------------------------------------------

    def _local(self, at: dt.datetime) -> dt.datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("Gate needs timezone-aware datetimes")
        return at.astimezone(self.tz)

    def _window_index(self, at: dt.datetime) -> int | None:
        """Index of the first window (in spec order) holding ``at``; -1 for no windows."""
        if not self.schedule.windows:
            return -1
        local = self._local(at)
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        for i, w in enumerate(self.schedule.windows):
            if _wall_in(w, weekday, minute):
                return i
        return None

    def in_window(self, at: dt.datetime) -> ScheduleWindow | None:
        """The window holding ``at`` (the first one listed, where they overlap), or None."""
        i = self._window_index(at)
        if i is None:
            return None
        return ALWAYS if i < 0 else self.schedule.windows[i]

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """The earliest instant at or after ``at`` that is inside a window."""
        if self.in_window(at) is not None:
            return at
        for chunk in range(0, _HORIZON_DAYS, _CHUNK_DAYS):
            found = self._first_open_in(at, chunk, chunk + _CHUNK_DAYS)
            if found is not None:
                return found
        raise ValueError("the schedule never opens")  # unreachable with a valid spec

    def _first_open_in(self, at: dt.datetime, first: int, last: int) -> dt.datetime | None:
        # A window opens either where the wall clock reaches its start, or where the UTC
        # offset changes and the wall clock jumps into it: those are the only candidates.
        base = self._local(at).date()
        candidates: list[dt.datetime] = []
        for offset in range(first - 1, last + 1):
            day = base + dt.timedelta(days=offset)
            for w in self.schedule.windows:
                if day.weekday() not in w.days:
                    continue
                start_day = day + dt.timedelta(days=w.start // MINUTES_PER_DAY)
                minute = w.start % MINUTES_PER_DAY
                wall = dt.datetime.combine(start_day, dt.time(minute // 60, minute % 60))
                for fold in (0, 1):
                    candidates.append(wall.replace(tzinfo=self.tz, fold=fold).astimezone(dt.UTC))
        lo = dt.datetime.combine(base, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=first - 2)
        candidates.extend(self._offset_changes(lo, lo + dt.timedelta(days=last - first + 4)))
        opens = [c for c in candidates if c >= at and self.in_window(c) is not None]
        return min(opens).astimezone(self.tz) if opens else None

    def _offset_changes(self, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
        """Instants in [lo, hi) where the zone's UTC offset changes (to the second)."""
        changes = []
        step = dt.timedelta(hours=1)  # no zone changes its offset twice within an hour
        t = lo
        off = t.astimezone(self.tz).utcoffset()
        while t < hi:
            nxt = t + step
            nxt_off = nxt.astimezone(self.tz).utcoffset()
            if nxt_off != off:
                a, b = t, nxt  # offset(a) == off, offset(b) != off
                while (b - a) > dt.timedelta(seconds=1):
                    mid = a + (b - a) / 2
                    mid = mid.replace(microsecond=0)
                    if mid.astimezone(self.tz).utcoffset() == off:
                        a = mid
                    else:
                        b = mid
                changes.append(b)
            t, off = nxt, nxt_off
        return changes

    # -- pausing ---------------------------------------------------------------------

    def waiting_until(self) -> dt.datetime | None:
        """When the gate opens again (local time) if it is closed now, else None.

        Asked before ``wait_for_window`` too, so the CLI can say it is waiting before any
        thread starts to.
        """
        with self._lock:
            paused = self._waiting_until
        if paused is not None:
            return paused.astimezone(self.tz)
        now = self._clock()
        return None if self.in_window(now) is not None else self.next_open(now)

    def wait_for_window(self, stop: threading.Event) -> bool:
        """Return at once inside a window; otherwise sleep until one opens.

        False when ``stop`` was set while waiting.
        """
        now = self._clock()
        if self.in_window(now) is not None:
            return True
        until = self.next_open(now)
        with self._lock:
            self._waiters += 1
        try:
            self._announce(until)
            while not stop.is_set():
                now = self._clock()
                if self.in_window(now) is not None:
                    return True
                if now >= until:  # the clock jumped: look again from here
                    until = self.next_open(now)
                    self._announce(until)
                remaining = (until - now).total_seconds()
                self._sleep(min(self._slice, max(remaining, 0.001)))
            return False
        finally:
            with self._lock:
                self._waiters -= 1
                if self._waiters == 0:
                    self._waiting_until = None

    def _announce(self, until: dt.datetime) -> None:
        """Log a pause once, however many threads run into it."""
        with self._lock:
            if self._waiting_until == until:
                return
            self._waiting_until = until
        local = until.astimezone(self.tz)
        log.info("outside the schedule: paused until %s", local.strftime("%a %Y-%m-%d %H:%M %Z"))
        if self._on_pause is not None:
            self._on_pause(local)

    # -- rate ------------------------------------------------------------------------

    def throttle(
        self, instances: int, nbytes: int, stop: threading.Event, *, hold_outside: bool = True
    ) -> bool:
        """Pay for ``instances`` received instances of ``nbytes`` bytes under the current
        window's caps, blocking until the rate allows more.

        Returns at once when the window has no cap. Outside every window (one that ended
        mid-study) it waits for the next one, unless ``hold_outside`` is False: apply
        throttles from inside a retrieval, where hours of waiting would outlast the source's
        association timeout; the study under way finishes and the next one waits instead.
        False when ``stop`` was set while waiting.
        """
        charged: set[tuple[int, str]] = set()
        while True:
            if stop.is_set():
                return False
            now = self._clock()
            index = self._window_index(now)
            if index is None:
                if not hold_outside:
                    return True
                if not self.wait_for_window(stop):
                    return False
                continue
            window = ALWAYS if index < 0 else self.schedule.windows[index]
            if not _is_capped(window):
                return True
            wait = 0.0
            with self._lock:
                for kind, rate, amount in (
                    ("instances", window.max_instances_per_second, float(instances)),
                    ("mb", window.max_mb_per_second, nbytes / BYTES_PER_MB),
                ):
                    if rate is None:
                        continue
                    bucket = self._bucket((index, kind), rate, now)
                    bucket.refill(now)
                    if (index, kind) not in charged:
                        bucket.tokens -= amount
                        charged.add((index, kind))
                    wait = max(wait, bucket.wait_seconds())
            if wait <= 0:
                return True
            # At least a millisecond: the clock counts microseconds, and a shorter sleep
            # might not move it at all.
            self._sleep(min(self._slice, max(wait, 0.001)))

    def _bucket(self, key: tuple[int, str], rate: float, now: dt.datetime) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            # One second's worth: a burst no bigger than the cap itself.
            bucket = _Bucket(rate=rate, capacity=rate, tokens=rate, at=now)
            self._buckets[key] = bucket
        return bucket

    # -- for people ------------------------------------------------------------------

    def describe(self) -> str:
        """One line for the CLI, e.g. 'schedule (Europe/Berlin): Mon-Fri 19:00-07:00 ...'."""
        zone = self.schedule.timezone or f"local time, {getattr(self.tz, 'key', None) or self.tz}"
        if not self.schedule.windows:
            return "schedule: any time, no rate cap"
        parts = [_describe_window(w) for w in self.schedule.windows]
        return f"schedule ({zone}): " + "; ".join(parts)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _describe_days(days: tuple[int, ...]) -> str:
    ordered = sorted(set(days))
    if len(ordered) == 7:
        return "every day"
    runs: list[list[int]] = []
    for d in ordered:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(
        DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs
    )


def _describe_window(w: ScheduleWindow) -> str:
    if w.start % MINUTES_PER_DAY == 0 and (w.end == MINUTES_PER_DAY or w.end == w.start):
        hours = "all day"
    elif _spans_midnight(w):
        hours = f"{_hhmm(w.start)}-{_hhmm(w.end)} (next day)"
    else:
        hours = f"{_hhmm(w.start)}-{_hhmm(w.end)}"
    caps = []
    if w.max_instances_per_second is not None:
        caps.append(f"{w.max_instances_per_second:g} instances/s")
    if w.max_mb_per_second is not None:
        caps.append(f"{w.max_mb_per_second:g} MB/s")
    cap = f", at most {' and '.join(caps)}" if caps else ", no rate cap"
    return f"{_describe_days(w.days)} {hours}{cap}"
