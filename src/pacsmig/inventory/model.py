"""Values the inventory produces; the plan builder consumes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesRecord:
    series_uid: str
    modality: str = ""
    series_number: str = ""
    description: str = ""
    instance_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyRecord:
    """A study as one PACS reports it (C-FIND study level plus its series)."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession: str = ""
    modalities: tuple[str, ...] = ()
    description: str = ""
    series: tuple[SeriesRecord, ...] = ()
    # Patient IDs seen on this Study Instance UID when the PACS reports more than one
    # (the same study filed under two patients): a hold, never a merge.
    other_patient_ids: tuple[str, ...] = ()

    @property
    def instance_count(self) -> int:
        return sum(s.instance_count for s in self.series)

    @property
    def series_count(self) -> int:
        return len(self.series)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    sop_uid: str
    series_uid: str
    sop_class_uid: str = ""
    instance_number: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Holdings:
    """What a PACS holds of one study: series UID -> instance count."""

    study_uid: str
    series_counts: dict[str, int]

    @property
    def instance_count(self) -> int:
        return sum(self.series_counts.values())
