"""Complete inventories from sources that cap C-FIND answers (Orthanc's LimitFindResults).

A query that comes back with as many studies as the source's cap may have been cut short,
silently. The date range is then bisected until every window answers below the cap; a single
day still at the cap is split into hourly StudyTime windows. The windows and their counts go
into the plan, with a statement of whether the inventory is provably complete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsmig.inventory.model import StudyRecord

# (date range "YYYYMMDD-YYYYMMDD" or "", time range "HHMMSS-HHMMSS" or "") ->
# (studies, whether the answer may have been cut short by the source's cap)
Query = Callable[[str, str], tuple[list[StudyRecord], bool]]

EARLIEST = dt.date(1900, 1, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    date_range: str
    time_range: str
    studies: int
    capped: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "study_date": self.date_range,
            "study_time": self.time_range,
            "studies": self.studies,
            "capped": self.capped,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowedInventory:
    studies: list[StudyRecord]
    windows: tuple[Window, ...] = ()
    complete: bool | None = None  # None: no cap configured, completeness cannot be proven
    note: str = ""
    queries: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "complete": self.complete,
            "note": self.note,
            "queries": self.queries,
            "windows": [w.as_dict() for w in self.windows],
        }


def _day(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def _fmt(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


@dataclass
class _State:
    found: dict[str, StudyRecord] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    queries: int = 0
    gaps: list[str] = field(default_factory=list)


def inventory_windows(
    query: Query,
    *,
    date_from: str | None,
    date_to: str | None,
    provable: bool,
    today: dt.date | None = None,
) -> WindowedInventory:
    """Query whole, then bisect what comes back capped.

    provable: the source's cap is known (source.find_limit), so an answer below it is known
    to be whole. Without it, only answers the source marks as cut short (Orthanc ends them
    with status 0xFE00) are detected, and completeness is not claimed.
    """
    state = _State()
    unproven = (
        "source.find_limit is not set: answers the source truncates without saying so "
        "cannot be detected"
    )
    whole = f"{date_from or ''}-{date_to or ''}" if (date_from or date_to) else ""
    records, capped = query(whole, "")
    state.queries += 1
    if not capped:
        return WindowedInventory(
            studies=records,
            windows=(Window(date_range=whole, time_range="", studies=len(records), capped=False),),
            complete=True if provable else None,
            note="" if provable else unproven,
            queries=1,
        )
    # Capped: everything with a date is reached by bisecting dates. Studies with no Study Date
    # cannot be selected by a date window; they are only provably all there if the answers
    # without a date fit under the cap.
    for rec in records:
        state.found[rec.study_uid] = rec
    undated_seen = sum(1 for r in records if not r.study_date)
    start = _day(date_from) if date_from else EARLIEST
    end = _day(date_to) if date_to else (today or dt.date.today())
    _bisect(query, start, end, state)
    if not date_from and not date_to and undated_seen:
        state.gaps.append(
            f"{undated_seen} studies without a Study Date were seen; more may exist and cannot "
            "be reached by date"
        )
    elif not date_from and not date_to:
        state.gaps.append("studies without a Study Date cannot be reached by date windows")
    still = [w for w in state.windows if w.capped]
    if still:
        state.gaps.append(f"{len(still)} one-hour windows still answered at the cap")
    if state.gaps:
        complete: bool | None = False
    else:
        complete = True if provable else None
    notes = state.gaps if provable or state.gaps else [unproven]
    return WindowedInventory(
        studies=list(state.found.values()),
        windows=tuple(state.windows),
        complete=complete,
        note="; ".join(notes),
        queries=state.queries,
    )


def _bisect(query: Query, start: dt.date, end: dt.date, state: _State) -> None:
    stack = [(start, end)]
    while stack:
        lo, hi = stack.pop()
        window = f"{_fmt(lo)}-{_fmt(hi)}"
        records, capped = query(window, "")
        state.queries += 1
        if not capped:
            _keep(
                state,
                records,
                Window(date_range=window, time_range="", studies=len(records), capped=False),
            )
            continue
        if lo < hi:
            mid = lo + (hi - lo) // 2
            stack.append((mid + dt.timedelta(days=1), hi))
            stack.append((lo, mid))
            continue
        for hour in range(24):
            times = f"{hour:02d}0000-{hour:02d}5959"
            recs, hour_capped = query(window, times)
            state.queries += 1
            _keep(
                state,
                recs,
                Window(date_range=window, time_range=times, studies=len(recs), capped=hour_capped),
            )


def _keep(state: _State, records: list[StudyRecord], window: Window) -> None:
    state.windows.append(window)
    for rec in records:
        state.found.setdefault(rec.study_uid, rec)
