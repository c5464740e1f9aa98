from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsmig.errors import ApprovalError, PlanError, StalePlanError
from pacsmig.inventory.model import Holdings, SeriesRecord, StudyRecord
from pacsmig.plan.approval import Approval, check_approval, write_approval
from pacsmig.plan.build import build_plan, decide
from pacsmig.plan.codec import FORMAT_VERSION, fingerprint, read_plan, write_plan
from pacsmig.spec.load import spec_from_text
from tests.unit.test_spec_load import GOOD

SPEC = spec_from_text(GOOD)


def _study(uid: str, counts: dict[str, int], **kw: object) -> StudyRecord:
    series = tuple(
        SeriesRecord(series_uid=s, modality="CT", instance_count=n) for s, n in counts.items()
    )
    return StudyRecord(study_uid=uid, patient_id="P1", series=series, **kw)  # type: ignore[arg-type]


def test_decisions() -> None:
    s = _study("1.1", {"1.1.1": 3, "1.1.2": 2})
    assert decide(s, None)[:2] == ("migrate", "not_at_destination")
    assert decide(s, Holdings(study_uid="1.1", series_counts={"1.1.1": 3, "1.1.2": 2}))[:2] == (
        "skip",
        "already_complete",
    )
    assert decide(s, Holdings(study_uid="1.1", series_counts={"1.1.1": 3}))[:2] == (
        "migrate",
        "incomplete_at_destination",
    )
    assert decide(s, Holdings(study_uid="1.1", series_counts={"1.1.1": 3, "1.1.2": 2, "9": 1}))[
        :2
    ] == (
        "migrate",
        "more_at_destination",
    )
    assert decide(_study("1.2", {}), None)[:2] == ("skip", "empty_study")
    conflict = _study("1.3", {"1.3.1": 1}, other_patient_ids=("A", "B"))
    assert decide(conflict, None)[0] == "hold"


def _plan_file(tmp_path: Path) -> Path:
    plan = build_plan(
        SPEC,
        [_study("1.1", {"1.1.1": 3}), _study("1.2", {"1.2.1": 1})],
        {},
        created_at="2026-01-01T00:00:00Z",
    )
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    return path


def test_plan_file_validates_against_schema_and_has_header(tmp_path: Path) -> None:
    import jsonschema

    from pacsmig.resources import load_schema

    path = _plan_file(tmp_path)
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator(load_schema("plan.schema.json")).validate(doc)
    header = doc["header"]
    assert doc["format_version"] == FORMAT_VERSION
    assert {"pacsmig_version", "spec_digest", "created_at", "source", "destination"} <= set(header)
    assert [a["expected"]["instances"] for a in doc["actions"]] == [3, 1]


def test_edited_plan_is_refused(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    text = path.read_text().replace('"P1"', '"P2"', 1)
    path.write_text(text)
    with pytest.raises(StalePlanError, match="changed after pacsmig wrote it"):
        read_plan(path)


def test_newer_format_refused(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="newer than this pacsmig"):
        read_plan(path)


def test_schema_violation_and_garbage(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["actions"][0]["action"] = "teleport"
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="fails its schema at actions/0/action"):
        read_plan(path)
    path.write_text("{not json")
    with pytest.raises(PlanError, match="line 1: not valid JSON"):
        read_plan(path)


def test_approval_bound_to_fingerprint(tmp_path: Path) -> None:
    path = _plan_file(tmp_path)
    plan = read_plan(path)
    with pytest.raises(ApprovalError, match="no sign-off"):
        check_approval(path, plan)
    write_approval(path, Approval(fingerprint=fingerprint(plan), by="alice", at="t"))
    assert check_approval(path, plan).by == "alice"
    write_approval(path, Approval(fingerprint="0" * 64, by="alice", at="t"))
    with pytest.raises(ApprovalError, match="changed after its sign-off by alice"):
        check_approval(path, plan)
