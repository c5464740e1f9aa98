"""`pacsmig plan` orders a real source's studies by appointments, an orders column and date."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pacsmig.testing.corpus import generate_study
from pacsmig.testing.servers import free_port
from tests.integration.conftest import Site, run_cli

PRIORITY_BLOCK = """\
ris:
  orders: orders.csv
  columns: {order_id: ORDER_ID, accession: ACC_NO}
  match:
    - rule: accession
  unmatched: migrate-as-is
priority:
  patients: upcoming.txt
  orders_column: Urgency
  orders_values: [STAT, URGENT, ROUTINE]
  order: newest-first
schedule:
  timezone: Europe/Berlin
  windows:
    - days: [mon, tue, wed, thu, fri]
      start: "19:00"
      end: "07:00"
      max_instances_per_second: 50
"""

# (name, patient ID, study date, accession, urgency of its order or None for no order)
STUDIES = (
    ("recent_routine", "PA", "20240110", "ACC1", "ROUTINE"),
    ("old_no_order", "PA", "20200101", "ACC2", None),
    ("appt_stat", "PB", "20180101", "ACC3", "STAT"),
    ("stat", "PC", "20230101", "ACC4", "STAT"),
    ("urgent", "PD", "20220101", "ACC5", "urgent"),
    ("appt_no_order", "PB", "20210101", "ACC6", None),
    ("older_stat", "PE", "20190101", "ACC7", "STAT"),
)


def _load(site: Site) -> dict[str, str]:
    """Upload the studies; name -> Study Instance UID as Orthanc reports it over REST."""
    names: dict[str, str] = {}
    for i, (name, pid, date, acc, _) in enumerate(STUDIES):
        files = generate_study(
            site.work / "gen",
            patient_id=pid,
            patient_name=f"TEST^{pid}",
            study_date=date,
            accession=acc,
            n_series=1,
            per_series=1,
            seed=i,
        )
        for f in files:
            assert site.source.upload(f)
        names[acc] = name
    by_name = {}
    for study_id in site.source.rest_get("/studies"):
        tags = site.source.rest_get(f"/studies/{study_id}")["MainDicomTags"]
        by_name[names[tags["AccessionNumber"]]] = tags["StudyInstanceUID"]
    assert len(by_name) == len(STUDIES)
    return by_name


def _write_inputs(work: Path, appointments: str) -> None:
    rows = [f"O{i},{acc},{urgency}" for i, (*_, acc, urgency) in enumerate(STUDIES) if urgency]
    (work / "orders.csv").write_text("ORDER_ID,ACC_NO,Urgency\n" + "\n".join(rows) + "\n")
    (work / "upcoming.txt").write_text(appointments)


def test_plan_orders_by_appointments_then_urgency_then_date(site: Site) -> None:
    uid = _load(site)
    _write_inputs(site.work, "# tomorrow\nPB\n")
    spec = site.spec(extra=PRIORITY_BLOCK)
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    doc = json.loads(plan.read_text())
    got = [(a["study_uid"], a.get("priority", "")) for a in doc["actions"]]
    assert all(a["action"] == "migrate" for a in doc["actions"])
    assert got == [
        (uid["appt_stat"], "appointment"),  # the appointment patient, urgent order first
        (uid["appt_no_order"], "appointment"),
        (uid["stat"], "orders:STAT"),  # STAT: newest first
        (uid["older_stat"], "orders:STAT"),
        (uid["urgent"], "orders:URGENT"),  # the file says "urgent": the spec's spelling
        (uid["recent_routine"], "orders:ROUTINE"),
        (uid["old_no_order"], ""),
    ]
    patients_file = site.work / "upcoming.txt"
    assert doc["header"]["inputs"]["patients"] == {
        "file": "upcoming.txt",
        "sha256": hashlib.sha256(patients_file.read_bytes()).hexdigest(),
    }

    shown = run_cli("show", plan, check=0).stdout
    assert (
        "priority: 2 studies of patients with appointments first, then by Urgency "
        "(STAT, URGENT, ROUTINE; 4 studies with a value), then newest first"
    ) in shown
    assert "schedule (Europe/Berlin): Mon-Fri 19:00-07:00 (next day), at most 50" in shown

    # Unchanged inputs, unchanged fingerprint; a new appointment changes order and fingerprint.
    again = site.work / "again.json"
    run_cli("plan", spec, "-o", again, check=0)
    assert json.loads(again.read_text())["fingerprint"] == doc["fingerprint"]
    patients_file.write_text("# tomorrow\nPB\nPD\n")
    changed = site.work / "changed.json"
    run_cli("plan", spec, "-o", changed, check=0)
    doc2 = json.loads(changed.read_text())
    assert doc2["fingerprint"] != doc["fingerprint"]
    assert [a["study_uid"] for a in doc2["actions"][:3]] == [
        uid["appt_stat"],
        uid["urgent"],
        uid["appt_no_order"],
    ]
    # A comment-only change still changes the digest: the sign-off names the exact file.
    run_cli("approve", changed, "--by", "reviewer", check=0)
    patients_file.write_text("# tomorrow, checked\nPB\nPD\n")
    replanned = site.work / "replanned.json"
    run_cli("plan", spec, "-o", replanned, check=0)
    doc3 = json.loads(replanned.read_text())
    assert [a["study_uid"] for a in doc3["actions"]] == [a["study_uid"] for a in doc2["actions"]]
    assert doc3["fingerprint"] != doc2["fingerprint"]


def test_bad_patients_file_fails_before_any_pacs_is_queried(tmp_path: Path) -> None:
    # Nothing listens on these ports: reaching the network would be exit code 4.
    _write_inputs(tmp_path, "patient,clinic\nPB,ortho\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""\
version: 1
name: bad
local: {{ae_title: PACSMIG}}
source: {{kind: dimse, ae_title: SRC, host: 127.0.0.1, port: {free_port()}, timeout: 2}}
destination: {{ae_title: DST, host: 127.0.0.1, port: {free_port()}, timeout: 2}}
{PRIORITY_BLOCK}"""
    )
    proc = run_cli("plan", spec, "-o", tmp_path / "plan.json", check=2)
    assert "upcoming.txt line 1: no 'patient_id' column" in proc.stderr
    assert not (tmp_path / "plan.json").exists()
