"""Plan values. The plan is data; apply, show and report are code that walks it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["migrate", "skip", "hold"]
ACTIONS: tuple[Action, ...] = ("hold", "migrate", "skip")

# Stable reason codes. They explain an action; apply never branches on them.
REASONS: dict[str, str] = {
    "not_at_destination": "not at the destination yet",
    "incomplete_at_destination": "partly at the destination; the rest will be sent",
    "already_complete": "already complete at the destination",
    "empty_study": "the source reports no instances",
    "patient_id_conflict": "the same Study Instance UID is filed under more than one Patient ID",
    "more_at_destination": "the destination holds more instances than the source",
    # HIS/RIS reconciliation
    "ambiguous_candidates": "more than one order fits; a person must choose (see candidates)",
    "order_claimed_twice": "the same order fits more than one study",
    "identity_conflict": "an order fits by accession or patient ID but the patient differs",
    "patient_conflict": "the archive files this study under more than one patient ID",
    "no_order": "no order fits this study",
    "override_skip": "a person decided not to migrate this study (override)",
    "override_unknown_order": "the override names an order that is not in the order list",
    "invalid_correction": "a corrected value does not fit its DICOM attribute",
    "sop_uid_conflict": "two files hold the same SOP Instance UID with different content",
    "corrections_at_destination": (
        "the destination already holds this study with the attributes the plan corrects"
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedSeries:
    series_uid: str
    modality: str = ""
    number: str = ""
    description: str = ""
    instances: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Correction:
    """One attribute that apply will change: DICOM keyword, value before and after."""

    keyword: str
    before: str
    after: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyAction:
    study_uid: str
    action: Action
    reason: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    accession: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()
    series: tuple[ExpectedSeries, ...] = ()
    found_at_destination: int = 0
    detail: str = ""
    corrections: tuple[Correction, ...] = ()
    match: dict[str, Any] | None = None
    # How a migrated study travels: "direct" (C-MOVE from the source straight to the
    # destination) or "relay" (through pacsmig); "" for studies that do not move.
    route: str = ""
    # A planned conversion of the pixel data, e.g. "lossy:1.2.840.10008.1.2.4.91" or
    # "prefer:<uid>,<uid>"; "" when instances travel as stored.
    transcode: str = ""
    # Why the study is where it is in the migration order ("appointment", "orders:STAT", ...).
    priority: str = ""

    @property
    def instance_count(self) -> int:
        return sum(s.instances for s in self.series)

    @property
    def series_count(self) -> int:
        return len(self.series)

    def expected_value(self, keyword: str, original: str) -> str:
        for c in self.corrections:
            if c.keyword == keyword:
                return c.after
        return original


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    ae_title: str
    host: str
    port: int
    kind: str = "dimse"
    retrieve: str = ""
    roots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanHeader:
    name: str
    pacsmig_version: str
    spec_digest: str
    created_at: str
    source: Endpoint
    destination: Endpoint
    spec: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    base_dir: str = ""
    inventory: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedFile:
    """A file of a filesystem source that cannot be migrated as it is."""

    path: str
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DuplicateFile:
    """A second file holding an identical copy of an instance: only `kept` is migrated."""

    sop_uid: str
    kept: str
    other: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    header: PlanHeader
    actions: tuple[StudyAction, ...]
    quarantine: tuple[QuarantinedFile, ...] = ()
    duplicates: tuple[DuplicateFile, ...] = ()

    def by_action(self, action: Action) -> list[StudyAction]:
        return [a for a in self.actions if a.action == action]

    def study(self, study_uid: str) -> StudyAction | None:
        for a in self.actions:
            if a.study_uid == study_uid:
                return a
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    studies: dict[str, int]
    instances: dict[str, int]
    reasons: dict[tuple[str, str], int]  # (action, reason) -> studies
    reason_instances: dict[tuple[str, str], int]


def summarize(plan: Plan) -> PlanSummary:
    studies: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    reason_instances: Counter[tuple[str, str]] = Counter()
    for a in plan.actions:
        studies[a.action] += 1
        instances[a.action] += a.instance_count
        reasons[(a.action, a.reason)] += 1
        reason_instances[(a.action, a.reason)] += a.instance_count
    return PlanSummary(
        studies={k: studies.get(k, 0) for k in ACTIONS},
        instances={k: instances.get(k, 0) for k in ACTIONS},
        reasons=dict(sorted(reasons.items())),
        reason_instances=dict(reason_instances),
    )
