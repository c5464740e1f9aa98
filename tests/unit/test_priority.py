"""The migration order: patients file, orders column, study date; build_plan and show."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from pacsmig.cli.render import plan_table
from pacsmig.errors import InputError, SpecError
from pacsmig.inventory.model import SeriesRecord, StudyRecord
from pacsmig.plan.build import build_plan
from pacsmig.plan.model import Correction, StudyAction
from pacsmig.plan.priority import (
    describe_priority,
    order_column_values,
    prioritise,
    read_patients,
)
from pacsmig.spec.load import spec_from_text
from pacsmig.spec.model import Priority, RisSpec


def act(
    uid: str,
    date: str,
    pid: str = "P",
    action: str = "migrate",
    order_id: str | None = None,
    **kw: object,
) -> StudyAction:
    match = {"order_id": order_id, "rule": "accession", "score": 1.0} if order_id else None
    return StudyAction(
        study_uid=uid,
        action=action,  # type: ignore[arg-type]
        reason="x",
        patient_id=pid,
        study_date=date,
        match=match,
        **kw,  # type: ignore[arg-type]
    )


def uids(actions: tuple[StudyAction, ...]) -> list[str]:
    return [a.study_uid for a in actions]


# -- read_patients -------------------------------------------------------------------------


def test_plain_list_with_comments_and_blanks(tmp_path: Path) -> None:
    f = tmp_path / "upcoming.txt"
    f.write_text("# tomorrow's list\nP1\n\n  P2  \n# P3 cancelled\nP 4\n", encoding="utf-8")
    assert read_patients(f) == {"P1", "P2", "P 4"}


def test_csv_with_patient_id_column(tmp_path: Path) -> None:
    f = tmp_path / "upcoming.csv"
    f.write_bytes(
        "\ufeff# export 2024-05-01\nAPPOINTMENT;Patient_ID;CLINIC\nA1;P1;ortho\n\nA2;P2;\n".encode()
    )
    assert read_patients(f) == {"P1", "P2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mrn,clinic\nP1,a\n", "upcoming.csv line 1: no 'patient_id' column"),
        ("patient_id,clinic\nP1,a\nP2\n", "upcoming.csv line 3: 1 fields, the header has 2"),
        ("patient_id,clinic\n,a\n", "upcoming.csv line 2: patient_id is empty"),
        ("# c\nP1\nN/A\n", "upcoming.csv line 3: not a patient ID"),
        ('patient_id\n"P1\n', "upcoming.csv line 2: unreadable CSV"),
    ],
)
def test_bad_patients_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "upcoming.csv"
    f.write_text(text)
    with pytest.raises(InputError) as exc:
        read_patients(f)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_patients_file_not_utf8_or_missing(tmp_path: Path) -> None:
    f = tmp_path / "upcoming.txt"
    f.write_bytes(b"P1\nM\xfcller\n")
    with pytest.raises(InputError, match="upcoming.txt line 2: not valid utf-8"):
        read_patients(f)
    with pytest.raises(InputError, match="missing.txt: cannot read"):
        read_patients(tmp_path / "missing.txt")


# -- order_column_values -------------------------------------------------------------------


def test_orders_column_read_like_the_orders(tmp_path: Path) -> None:
    f = tmp_path / "orders.csv"
    f.write_text("ORDER_ID;Urgency;MRN\n O-1 ;STAT;P1\nO-2; routine ;P2\n\nO-3;;P3\n")
    ris = RisSpec(orders=f, columns={"order_id": "ORDER_ID"})
    assert order_column_values(ris, "urgency") == {"O-1": "STAT", "O-2": "routine", "O-3": ""}


def test_orders_column_missing_or_hl7(tmp_path: Path) -> None:
    f = tmp_path / "orders.csv"
    f.write_text("ORDER_ID,MRN\nO-1,P1\n")
    ris = RisSpec(orders=f, columns={"order_id": "ORDER_ID"})
    with pytest.raises(InputError, match=r"orders.csv line 1: column 'urgency' \(priority"):
        order_column_values(ris, "urgency")
    f.write_text("ORDER_ID,urgency\nO-1,STAT,extra\n")
    with pytest.raises(InputError, match="orders.csv line 2: 3 fields, the header has 2"):
        order_column_values(ris, "urgency")
    hl7 = RisSpec(orders=tmp_path / "orders.hl7", format="hl7")
    with pytest.raises(SpecError, match="orders_column: needs ris.format csv"):
        order_column_values(hl7, "urgency")


# -- prioritise ----------------------------------------------------------------------------


def test_holds_first_skips_last_migrations_newest_first() -> None:
    actions = [
        act("1.5", "20200101", action="skip"),
        act("1.1", "20190101"),
        act("1.2", "20210101"),
        act("1.9", "20180101", action="hold"),
        act("1.3", "20210101"),
        act("1.4", ""),
        act("1.8", "20170101", action="hold"),
    ]
    out = prioritise(actions, Priority())
    assert uids(out) == ["1.8", "1.9", "1.2", "1.3", "1.1", "1.4", "1.5"]
    assert all(a.priority == "" for a in out)
    oldest = prioritise(actions, Priority(order="oldest-first"))
    assert uids(oldest) == ["1.8", "1.9", "1.1", "1.2", "1.3", "1.4", "1.5"]
    found = prioritise(actions, Priority(order="as-found"))
    assert uids(found) == ["1.8", "1.9", "1.1", "1.2", "1.3", "1.4", "1.5"]
    found_rev = prioritise(actions[::-1], Priority(order="as-found"))
    assert uids(found_rev)[2:6] == ["1.4", "1.3", "1.2", "1.1"]


def test_appointments_then_orders_column_then_date() -> None:
    actions = [
        act("1.1", "20240101", pid="A", order_id="O1"),
        act("1.2", "20230101", pid="B", order_id="O2"),
        act("1.3", "20220101", pid="C", order_id="O3"),
        act("1.4", "20210101", pid="D", order_id="O4"),
        act("1.5", "20200101", pid="E"),
        act("1.6", "20190101", pid="c", order_id="O6"),  # appointment: IDs compare like orders
        act("1.7", "20180101", pid="F", order_id="O7"),
        act("1.8", "20170101", pid="X", order_id="O8", action="hold"),
    ]
    values = {"O1": "ROUTINE", "O2": "stat", "O3": "URGENT", "O4": "STAT", "O7": "later"}
    prio = Priority(
        patients=Path("p.txt"),
        orders_column="urgency",
        orders_values=("STAT", "URGENT", "ROUTINE"),
    )
    out = prioritise(actions, prio, patients=frozenset({" C ", "X"}), order_values=values)
    assert uids(out) == ["1.8", "1.3", "1.6", "1.2", "1.4", "1.1", "1.7", "1.5"]
    labels = {a.study_uid: a.priority for a in out}
    assert labels == {
        "1.8": "",  # a hold is not ordered, whoever the patient
        "1.3": "appointment",
        "1.6": "appointment",
        "1.2": "orders:STAT",
        "1.4": "orders:STAT",
        "1.1": "orders:ROUTINE",
        "1.7": "orders:later",
        "1.5": "",
    }
    assert describe_priority(out, prio) == (
        "priority: 2 studies of patients with appointments first, then by urgency "
        "(STAT, URGENT, ROUTINE; 4 studies with a value), then newest first"
    )


def test_numeric_orders_column_and_corrected_patient_id() -> None:
    actions = [
        act("1.1", "20240101", order_id="O1"),
        act("1.2", "20240101", order_id="O2"),
        act("1.3", "20240101", order_id="O3"),
        act("1.4", "20240101", order_id="O4"),
        act(
            "1.5",
            "20200101",
            pid="OLD",
            corrections=(Correction(keyword="PatientID", before="OLD", after="NEW"),),
        ),
    ]
    values = {"O1": "10", "O2": "2", "O3": "n/a", "O4": "2.5"}
    out = prioritise(
        actions,
        Priority(orders_column="rank"),
        patients=frozenset({"NEW"}),
        order_values=values,
    )
    assert uids(out) == ["1.5", "1.2", "1.4", "1.1", "1.3"]
    assert describe_priority(out, Priority()) == "priority: newest first"


# -- wired into build_plan and show --------------------------------------------------------

SPEC = """\
version: 1
name: t
local: {ae_title: PACSMIG}
source: {kind: dimse, ae_title: SRC, host: 127.0.0.1, port: 104}
destination: {ae_title: DST, host: 127.0.0.1, port: 105}
priority:
  patients: upcoming.txt
  order: oldest-first
schedule:
  timezone: Europe/Berlin
  windows:
    - {days: [sat, sun], max_instances_per_second: 5}
"""


def study(uid: str, pid: str, date: str) -> StudyRecord:
    return StudyRecord(
        study_uid=uid,
        patient_id=pid,
        study_date=date,
        series=(SeriesRecord(series_uid=uid + ".1", instance_count=2),),
    )


def test_build_plan_orders_and_show_prints_priority_and_schedule(tmp_path: Path) -> None:
    spec = spec_from_text(SPEC, base_dir=tmp_path)
    studies = [study("1.1", "A", "20200101"), study("1.2", "B", "20210101")]
    studies.append(study("1.3", "A", "20220101"))
    plan = build_plan(spec, studies, {}, created_at="2024-01-01T00:00:00Z", patients=frozenset("B"))
    assert uids(plan.actions) == ["1.2", "1.1", "1.3"]
    assert [a.priority for a in plan.actions] == ["appointment", "", ""]
    console = Console(width=300, record=True)
    plan_table(console, plan, None)
    text = console.export_text()
    assert "priority: 1 study of patients with appointments first, then oldest first" in text
    assert "schedule (Europe/Berlin): Sat-Sun all day, at most 5 instances/s" in text
    assert "appointment" in text.split("study UID", 1)[1]
