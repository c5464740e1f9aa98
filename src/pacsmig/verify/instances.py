"""The instances level: the exact set of SOP Instance UIDs at the destination, per series."""

from __future__ import annotations

from collections.abc import Iterable

from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import InstanceRow
from pacsmig.plan.model import StudyAction
from pacsmig.verify.counts import SeriesCheck
from pacsmig.verify.results import InstanceSetCheck


def records_of(rows: Iterable[InstanceRow]) -> list[InstanceRecord]:
    """The instances apply recorded for a study (what the source held when it ran)."""
    return [
        InstanceRecord(sop_uid=r.sop_uid, series_uid=r.series_uid, sop_class_uid=r.sop_class_uid)
        for r in rows
    ]


def instance_check(
    action: StudyAction, expected: list[InstanceRecord], found: list[InstanceRecord]
) -> tuple[tuple[SeriesCheck, ...], InstanceSetCheck]:
    """Series checks naming every missing instance, and the study's missing and extra UIDs.

    Series counts are what the plan expects and what the destination listed; `missing` is
    exact, whatever the counts say (a destination can list the right number of the wrong
    instances).
    """
    have = {r.sop_uid for r in found}
    want = {r.sop_uid for r in expected}
    found_per_series: dict[str, int] = {}
    for r in found:
        found_per_series[r.series_uid] = found_per_series.get(r.series_uid, 0) + 1
    wanted_per_series: dict[str, set[str]] = {}
    for r in expected:
        wanted_per_series.setdefault(r.series_uid, set()).add(r.sop_uid)
    series = tuple(
        SeriesCheck(
            series_uid=s.series_uid,
            expected=s.instances,
            found=found_per_series.get(s.series_uid, 0),
            missing=tuple(sorted(wanted_per_series.get(s.series_uid, set()) - have)),
        )
        for s in sorted(action.series, key=lambda s: s.series_uid)
    )
    return series, InstanceSetCheck(
        missing=tuple(sorted(want - have)), extra=tuple(sorted(have - want))
    )
