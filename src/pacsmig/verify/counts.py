"""Counts at study and series level, instance level where they differ (C-FIND at the destination)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pacsmig.apply.sources import DimseAccess, FilesystemAccess, SourceAccess
from pacsmig.dicomnet.find import FindSession
from pacsmig.errors import PacsmigError
from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import Journal
from pacsmig.plan.model import Plan, StudyAction
from pacsmig.spec.load import spec_of_plan
from pacsmig.spec.model import FilesystemSource
from pacsmig.verify.results import CommitmentCheck, ImageCheck, InstanceSetCheck

VERIFIED, MISSING_STATUS, NOT_FOUND = "verified", "missing", "not_found"
ATTRIBUTES_DIFFER = "attributes_differ"
IMAGES_DIFFER, NOT_COMMITTED, ERROR = "images_differ", "not_committed", "error"
# A study's status is the first of these that applies: definite findings before a level that
# could not run.
STATUS_ORDER = (
    NOT_FOUND,
    MISSING_STATUS,
    ATTRIBUTES_DIFFER,
    IMAGES_DIFFER,
    NOT_COMMITTED,
    ERROR,
    VERIFIED,
)

# (DICOM keyword, StudyAction field): what the destination's study-level C-FIND must return.
CHECKED_ATTRIBUTES = (
    ("PatientID", "patient_id"),
    ("PatientName", "patient_name"),
    ("PatientBirthDate", "birth_date"),
    ("PatientSex", "sex"),
    ("AccessionNumber", "accession"),
    ("StudyDate", "study_date"),
    ("StudyDescription", "description"),
)
_RECORD_FIELD = {
    "patient_id": "patient_id",
    "patient_name": "patient_name",
    "birth_date": "birth_date",
    "sex": "sex",
    "accession": "accession",
    "study_date": "study_date",
    "description": "description",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeDiff:
    keyword: str
    expected: str
    found: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesCheck:
    series_uid: str
    expected: int
    found: int
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyCheck:
    study_uid: str
    # verified | missing | not_found | attributes_differ | images_differ | not_committed | error
    status: str
    expected_instances: int
    found_instances: int
    series: tuple[SeriesCheck, ...] = ()
    extra_instances: int = 0
    attributes: tuple[AttributeDiff, ...] = ()
    note: str = ""
    # The levels that ran, and what the levels beyond counts found (None: not run).
    levels: tuple[str, ...] = ()
    instance_set: InstanceSetCheck | None = None
    images: ImageCheck | None = None
    commitment: CommitmentCheck | None = None

    @property
    def ok(self) -> bool:
        return self.status == VERIFIED

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(uid for s in self.series for uid in s.missing)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    run_id: int
    checks: tuple[StudyCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def missing_instances(self) -> int:
        return sum(len(c.missing) for c in self.checks)


Progress = Callable[[int, int], None]


def planned_for_destination(plan: Plan) -> list[StudyAction]:
    """Studies the plan promises at the destination: migrated, or already complete there."""
    return [
        a
        for a in plan.actions
        if a.action == "migrate" or (a.action == "skip" and a.reason == "already_complete")
    ]


class _SourceLookup:
    """Asks the source only when a missing instance must be named and the journal can't."""

    def __init__(self, plan: Plan, index_path: Path | None) -> None:
        self._spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
        self._index_path = index_path
        self._cache: dict[str, dict[str, set[str]]] = {}

    def instances(self, study_uid: str, series_uid: str) -> set[str]:
        if study_uid not in self._cache:
            self.study_instances(study_uid)
        return self._cache[study_uid].get(series_uid, set())

    def study_instances(self, study_uid: str) -> list[InstanceRecord]:
        records = self._access().instances(study_uid)
        by_series: dict[str, set[str]] = {}
        for inst in records:
            by_series.setdefault(inst.series_uid, set()).add(inst.sop_uid)
        self._cache[study_uid] = by_series
        return records

    def _access(self) -> SourceAccess:
        src = self._spec.source
        if isinstance(src, FilesystemSource):
            if self._index_path is None:
                raise PacsmigError("the filesystem source's index is missing")
            return FilesystemAccess(self._index_path)
        return DimseAccess(self._spec, src)

    def close(self) -> None:
        self._cache.clear()


def check_study(
    action: StudyAction, dest: FindSession, known: dict[str, set[str]], source: _SourceLookup
) -> StudyCheck:
    found = {s.series_uid: s.instance_count for s in dest.series(action.study_uid)}
    expected_series = {s.series_uid: s.instances for s in action.series}
    series_checks: list[SeriesCheck] = []
    for series_uid, expected in sorted(expected_series.items()):
        got = found.get(series_uid, 0)
        missing: tuple[str, ...] = ()
        if got < expected or (got != expected and series_uid in known):
            have = (
                {i.sop_uid for i in dest.instances(action.study_uid, series_uid)} if got else set()
            )
            wanted = known.get(series_uid) or source.instances(action.study_uid, series_uid)
            missing = tuple(sorted(wanted - have))
        series_checks.append(
            SeriesCheck(series_uid=series_uid, expected=expected, found=got, missing=missing)
        )
    extra = sum(n for uid, n in found.items() if uid not in expected_series) + sum(
        max(0, found.get(uid, 0) - n) for uid, n in expected_series.items()
    )
    total_found = sum(found.values())
    any_missing = any(s.missing or s.found < s.expected for s in series_checks)
    diffs = attribute_diffs(action, dest) if found else ()
    if not found:
        status = NOT_FOUND
    elif any_missing:
        status = MISSING_STATUS
    elif diffs:
        status = ATTRIBUTES_DIFFER
    else:
        status = VERIFIED
    note = f"{extra} instances at the destination not in the plan" if extra else ""
    return StudyCheck(
        study_uid=action.study_uid,
        status=status,
        expected_instances=action.instance_count,
        found_instances=total_found,
        series=tuple(series_checks),
        extra_instances=extra,
        attributes=diffs,
        note=note,
    )


def _canonical(keyword: str, value: str) -> str:
    value = value.strip()
    if keyword == "PatientName":
        # PN: trailing empty components and padding are not part of the value (PS3.5 6.2.1).
        value = "=".join(group.rstrip("^ ") for group in value.split("=")).rstrip("=")
    return value


def _same_text(keyword: str, expected: str, found: str) -> bool:
    if _canonical(keyword, expected) == _canonical(keyword, found):
        return True
    # A PACS that answers C-FIND in a narrower character set (Orthanc's DefaultEncoding) drops
    # what it cannot encode: 'Yamada^Tarou=山田^太郎' comes back 'Yamada^Tarou=^'. That answer
    # cannot tell the values apart; it is not evidence of a difference.
    if expected.isascii() or not found.isascii():
        return False
    narrowed = "".join(ch for ch in expected if ch.isascii())
    return _canonical(keyword, narrowed) == _canonical(keyword, found)


def attribute_diffs(action: StudyAction, dest: FindSession) -> tuple[AttributeDiff, ...]:
    """Key attributes at the destination against the plan's values after its corrections."""
    records = dest.studies(study_uid=action.study_uid)
    if not records:
        return ()
    found = records[0]
    diffs = []
    for keyword, field_name in CHECKED_ATTRIBUTES:
        expected = action.expected_value(keyword, getattr(action, field_name))
        got = getattr(found, _RECORD_FIELD[field_name])
        if not _same_text(keyword, expected, got):
            diffs.append(AttributeDiff(keyword=keyword, expected=expected, found=got))
    if len(records) > 1 or found.other_patient_ids:
        ids = sorted({r.patient_id for r in records} | set(found.other_patient_ids))
        diffs.append(
            AttributeDiff(
                keyword="PatientID",
                expected=action.expected_value("PatientID", action.patient_id),
                found="\\".join(ids),
            )
        )
    return tuple(diffs)


def verify_plan(
    plan: Plan,
    journal: Journal,
    progress: Progress | None = None,
    *,
    index_path: Path | None = None,
    levels: tuple[str, ...] | None = None,
    image_sample: float | int | None = None,
) -> VerifyResult:
    """Verify at the spec's levels (or those given): see pacsmig.verify.levels."""
    from pacsmig.verify.levels import verify_plan as run

    return run(
        plan, journal, progress, index_path=index_path, levels=levels, image_sample=image_sample
    )


_LEVEL_FIELDS = ("levels", "instance_set", "images", "commitment")


def detail_of(check: StudyCheck) -> dict[str, Any]:
    """The per-study detail the journal keeps and the report reads (keys are a contract)."""
    d = {k: v for k, v in asdict(check).items() if k not in _LEVEL_FIELDS}
    d.pop("study_uid")
    d["levels"] = list(check.levels)
    d["instances"] = check.instance_set.detail() if check.instance_set is not None else None
    d["images"] = check.images.detail() if check.images is not None else None
    d["commitment"] = check.commitment.detail() if check.commitment is not None else None
    return d
