"""Windowed inventory against sources that cap C-FIND answers silently."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.inventory.model import StudyRecord
from pacsmig.inventory.windows import Query, inventory_windows

TODAY = dt.date(2026, 11, 28)


def capped_source(studies: list[StudyRecord], cap: int) -> Query:
    """A fake SCP: date/time range matching (PS3.4 C.2.2.2.5) and a silent cap."""

    def query(date_range: str, time_range: str) -> tuple[list[StudyRecord], bool]:
        def match(value: str, rng: str) -> bool:
            if not rng:
                return True
            lo, _, hi = rng.partition("-")
            return bool(value) and (not lo or value >= lo) and (not hi or value <= hi)

        hits = [
            s
            for s in studies
            if match(s.study_date, date_range) and match(s.study_time, time_range)
        ]
        hits = hits[:cap]
        return hits, len(hits) >= cap

    return query


dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=TODAY).map(lambda d: d.strftime("%Y%m%d"))
times = st.times().map(lambda t: t.strftime("%H%M%S"))


@st.composite
def populations(draw: st.DrawFn) -> list[StudyRecord]:
    n = draw(st.integers(0, 120))
    hot_day = draw(dates)
    out = []
    for i in range(n):
        day = hot_day if draw(st.booleans()) else draw(dates)
        out.append(StudyRecord(study_uid=f"1.2.{i}", study_date=day, study_time=draw(times)))
    return out


@settings(max_examples=150, deadline=None)
@given(populations(), st.integers(2, 30))
def test_every_dated_study_is_found_despite_the_cap(studies: list[StudyRecord], cap: int) -> None:
    result = inventory_windows(
        capped_source(studies, cap), date_from=None, date_to=None, provable=True, today=TODAY
    )
    found = {s.study_uid for s in result.studies}
    per_hour: dict[tuple[str, str], int] = {}
    for s in studies:
        per_hour[(s.study_date, s.study_time[:2])] = (
            per_hour.get((s.study_date, s.study_time[:2]), 0) + 1
        )
    overfull = any(n >= cap for n in per_hour.values())
    if not overfull:
        assert found == {s.study_uid for s in studies}
        assert result.complete is not False or "Study Date" in result.note
    else:
        assert result.complete is False and "still answered at the cap" in result.note
    # Windows never overlap in what they claim, and every window below the cap is exact.
    for w in result.windows:
        if not w.capped:
            assert w.studies < cap


def test_no_cap_configured_says_unknown() -> None:
    studies = [StudyRecord(study_uid=f"1.{i}", study_date="20200101") for i in range(10)]
    silent = capped_source(studies, 5)

    def unknowing(d: str, t: str) -> tuple[list[StudyRecord], bool]:
        return silent(d, t)[0], False  # no find_limit: the cap cannot be seen

    result = inventory_windows(unknowing, date_from=None, date_to=None, provable=False)
    assert result.complete is None and "find_limit" in result.note
    assert len(result.studies) == 5  # what a silently truncating source gives: not provable


def test_select_range_is_respected_and_provable() -> None:
    studies = [
        StudyRecord(study_uid=f"1.{i}", study_date=f"202001{i % 28 + 1:02d}", study_time="120000")
        for i in range(40)
    ]
    result = inventory_windows(
        capped_source(studies, 7), date_from="20200101", date_to="20200131", provable=True
    )
    assert {s.study_uid for s in result.studies} == {s.study_uid for s in studies}
    assert result.complete is True and result.queries > 1
