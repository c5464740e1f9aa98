from __future__ import annotations

from pathlib import Path

import pytest

from pacsmig.errors import SpecError
from pacsmig.inventory.model import Holdings, SeriesRecord, StudyRecord
from pacsmig.plan.build import build_plan
from pacsmig.plan.codec import dumps, fingerprint, loads
from pacsmig.reconcile.reconcile import load_inputs, reconcile
from pacsmig.spec.load import load_spec, spec_from_text
from tests.unit.test_spec_load import GOOD

RIS = """\
ris:
  orders: orders.csv
  columns: {order_id: ORDER_ID, accession: ACC_NO, patient_id: MRN, patient_name: PAT_NAME,
            birth_date: DOB, sex: SEX, study_date: EXAM_DATE, modality: MODALITY, description: PROC_DESC}
  unmatched: {unmatched}
"""


def _study(uid: str, pid: str, acc: str, date: str = "20240101") -> StudyRecord:
    return StudyRecord(
        study_uid=uid,
        patient_id=pid,
        patient_name="DOE^JOHN",
        birth_date="19700101",
        sex="M",
        study_date=date,
        accession=acc,
        modalities=("CT",),
        series=(SeriesRecord(series_uid=uid + ".1", modality="CT", instance_count=2),),
    )


def _spec(tmp_path: Path, unmatched: str = "hold"):  # type: ignore[no-untyped-def]
    (tmp_path / "orders.csv").write_text(
        "ORDER_ID,ACC_NO,MRN,PAT_NAME,DOB,SEX,EXAM_DATE,MODALITY,PROC_DESC\n"
        'O1,ACC1,MRN9,"Doe, John",1970-01-01,M,2024-01-01,CT,CT HEAD\n'
        "O2,ACC2,P2,DOE^JOHN,19700101,M,20240101,CT,\n"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD + RIS.replace("{unmatched}", unmatched))
    return load_spec(path)


def test_reconciled_plan_carries_matches_corrections_and_holds(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    studies = [
        _study("1.1", "P1", "ACC1"),
        _study("1.2", "P2", "X"),
        _study("1.3", "P3", "", "20200101"),
    ]
    inputs = load_inputs(spec.ris)  # type: ignore[arg-type]
    rec = reconcile(spec.ris, studies, inputs)  # type: ignore[arg-type]
    plan = build_plan(spec, studies, {}, created_at="t", reconciled=rec, inputs=inputs.digests)
    by_uid = {a.study_uid: a for a in plan.actions}
    assert plan.actions[0].study_uid == "1.3" and plan.actions[0].action == "hold"
    assert plan.actions[0].reason == "no_order"
    one = by_uid["1.1"]
    assert one.match == {"order_id": "O1", "rule": "accession", "score": 1.0}
    assert {(c.keyword, c.before, c.after) for c in one.corrections} == {
        ("PatientID", "P1", "MRN9"),
        ("StudyDescription", "", "CT HEAD"),
    }
    two = by_uid["1.2"]
    assert two.match is not None and two.match["rule"] == "patient-date-modality"
    assert [(c.keyword, c.after) for c in two.corrections] == [("AccessionNumber", "ACC2")]
    assert loads(dumps(plan)) == plan
    assert plan.header.inputs["orders"]["file"] == "orders.csv"


def test_migrate_as_is_and_corrections_at_destination(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "migrate-as-is")
    studies = [_study("1.1", "P1", "ACC1"), _study("1.3", "P3", "", "20200101")]
    inputs = load_inputs(spec.ris)  # type: ignore[arg-type]
    rec = reconcile(spec.ris, studies, inputs)  # type: ignore[arg-type]
    holdings = {"1.1": Holdings(study_uid="1.1", series_counts={"1.1.1": 2})}
    plan = build_plan(spec, studies, holdings, created_at="t", reconciled=rec)
    by_uid = {a.study_uid: a for a in plan.actions}
    assert (by_uid["1.3"].action, by_uid["1.3"].reason) == ("migrate", "not_at_destination")
    assert by_uid["1.3"].match is not None and by_uid["1.3"].match["unmatched"] is True
    # Corrected copies beside uncorrected ones would be two truths: held for a person.
    assert (by_uid["1.1"].action, by_uid["1.1"].reason) == ("hold", "corrections_at_destination")


def test_changed_orders_change_the_fingerprint(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    studies = [_study("1.1", "P1", "ACC1")]

    def plan_fp() -> str:
        inputs = load_inputs(spec.ris)  # type: ignore[arg-type]
        rec = reconcile(spec.ris, studies, inputs)  # type: ignore[arg-type]
        return fingerprint(
            build_plan(spec, studies, {}, created_at="t", reconciled=rec, inputs=inputs.digests)
        )

    first = plan_fp()
    assert plan_fp() == first
    orders = tmp_path / "orders.csv"
    orders.write_text(orders.read_text().replace("CT HEAD", "CT BRAIN"))
    assert plan_fp() != first


def test_ris_spec_errors() -> None:
    with pytest.raises(SpecError, match="ris.columns: required for format csv"):
        spec_from_text(GOOD + "ris:\n  orders: o.csv\n")
    with pytest.raises(SpecError, match=r"ris\.match\[0\]\.rule: got 'fuzzy'"):
        spec_from_text(GOOD + "ris:\n  orders: o.hl7\n  format: hl7\n  match:\n    - rule: fuzzy\n")
    with pytest.raises(SpecError, match="does not apply to rule 'accession'"):
        spec_from_text(
            GOOD
            + "ris:\n  orders: o.hl7\n  format: hl7\n  match:\n    - {rule: accession, min_similarity: 0.9}\n"
        )
    with pytest.raises(SpecError, match=r"ris\.correct\[0\]"):
        spec_from_text(GOOD + "ris:\n  orders: o.hl7\n  format: hl7\n  correct: [PatientWeight]\n")
