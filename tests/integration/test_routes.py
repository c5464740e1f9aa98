"""Routes between two real Orthanc servers: `direct` (source moves to destination) and a
parallel `relay` (several studies retrieved, several associations sending)."""

from __future__ import annotations

import json
from pathlib import Path

from pacsmig import api
from pacsmig.journal.store import SENT, Journal
from pacsmig.plan.codec import read_plan
from pacsmig.testing.corpus import generate_corpus, real_sample_files
from tests.integration.conftest import Site, run_cli
from tests.integration.helpers import assert_same_instances, sop_uid_of


def _load(site: Site, studies: int = 4) -> set[str]:
    files = real_sample_files()[:6] + generate_corpus(
        site.work / "gen", studies=studies, per_series=3
    )
    accepted = [f for f in files if site.source.upload(f) is not None]
    return {sop_uid_of(f) for f in accepted}


def _journal_rows(plan: Path) -> dict[str, tuple[str, str]]:
    with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
        return {r.sop_uid: (r.state, r.detail) for r in journal.instances()}


DIRECT = "  move_ae: NEWPACS\n"


def test_direct_route_moves_source_to_destination_without_relaying(site: Site) -> None:
    expected = _load(site)
    spec = site.spec("c-move")
    text = spec.read_text().replace(
        f"  port: {site.dest.dicom_port}\n", f"  port: {site.dest.dicom_port}\n{DIRECT}"
    )
    spec.write_text(text)
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    doc = json.loads(plan.read_text())
    assert {a["route"] for a in doc["actions"]} == {"direct"}
    shown = run_cli("show", plan, check=0).stdout
    assert "direct" in shown
    run_cli("approve", plan, "--by", "tester", check=0)

    applied = run_cli("apply", plan, check=0)
    assert "Traceback" not in applied.stderr

    # Independent check: the destination holds exactly the source's instances, unchanged.
    assert site.dest.sop_instance_uids() == expected
    assert_same_instances(site.source, site.dest, expected)
    rows = _journal_rows(plan)
    assert {
        uid for uid, (state, detail) in rows.items() if state == SENT and detail == "direct"
    } == (expected)
    # Verified live, from the destination's answer after each move: every study verified.
    with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
        verified = journal.verification_by_study()
    assert {v["status"] for v in verified.values()} == {"verified"}
    assert len(verified) == len(json.loads(plan.read_text())["actions"])

    # Some instances lost at the destination: the next apply moves only those, by UID.
    lost = sorted(expected)[:3]
    for uid in lost:
        assert site.dest.delete_instance(uid)
    result = api.apply(plan)
    assert result.ok and result.sent_direct == 3 and result.present == 0
    assert site.dest.sop_instance_uids() == expected


def test_direct_route_with_a_move_destination_the_source_does_not_know(site: Site) -> None:
    _load(site, studies=1)
    spec = site.spec("c-get")
    spec.write_text(
        spec.read_text().replace(
            f"  port: {site.dest.dicom_port}\n",
            f"  port: {site.dest.dicom_port}\n  move_ae: NOSUCHAE\n",
        )
    )
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    run_cli("approve", plan, "--by", "tester", check=0)
    proc = run_cli("apply", plan, check=4)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert any("NOSUCHAE" in ln and "move_ae" in ln for ln in lines), proc.stderr
    assert site.dest.instance_count() == 0


def test_corrections_or_relay_setting_force_the_relay_route(site: Site) -> None:
    _load(site, studies=1)
    spec = site.spec("c-get")
    spec.write_text(
        spec.read_text().replace(
            f"  port: {site.dest.dicom_port}\n",
            f"  port: {site.dest.dicom_port}\n  move_ae: NEWPACS\n  route: relay\n",
        )
    )
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    assert {a["route"] for a in json.loads(plan.read_text())["actions"]} == {"relay"}


def test_parallel_relay_sends_every_instance_once(site: Site) -> None:
    expected = _load(site, studies=6)
    spec = site.spec("c-move")
    text = (
        spec.read_text()
        .replace("  retrieve: c-move\n", "  retrieve: c-move\n  parallel: 3\n")
        .replace(
            f"  port: {site.dest.dicom_port}\n",
            f"  port: {site.dest.dicom_port}\n  associations: 3\n",
        )
    )
    spec.write_text(text)
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    run_cli("approve", plan, "--by", "tester", check=0)
    result = api.apply(plan)

    assert result.ok, result
    assert result.sent == len(expected) and result.sent_direct == 0
    assert site.dest.sop_instance_uids() == expected
    assert_same_instances(site.source, site.dest, expected)
    with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
        sent_events = [e for e in journal.events() if e["kind"] == "sent" and e["sop_uid"]]
        studies = journal.studies()
    assert sorted(e["sop_uid"] for e in sent_events) == sorted(expected), "sent twice or lost"
    assert {s[0] for s in studies.values()} == {"transferred"}
    # Idempotent: a second apply finds everything there and sends nothing.
    again = api.apply(plan)
    assert again.ok and again.sent == 0
