"""plan -> approve -> apply -> verify -> report between two real Orthanc servers, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsmig.testing.corpus import generate_corpus, real_sample_files
from tests.integration.conftest import Site, run_cli
from tests.integration.helpers import assert_same_instances, sop_uid_of


def load_source(site: Site, *, studies: int = 3, per_series: int = 3) -> list[Path]:
    files = real_sample_files() + generate_corpus(
        site.work / "gen", studies=studies, per_series=per_series
    )
    accepted = [f for f in files if site.source.upload(f) is not None]
    assert len(accepted) >= 10
    return accepted


@pytest.mark.parametrize(
    ("retrieve", "engine"),
    [("c-get", "wire"), ("c-get", "pynetdicom"), ("c-move", "wire"), ("c-move", "pynetdicom")],
)
def test_full_migration(
    site: Site, retrieve: str, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine: pacsmig's own C-STORE/C-FIND/C-MOVE wire code (the default), or pynetdicom
    everywhere (PACSMIG_WIRE=pynetdicom, the escape hatch): both must migrate exactly."""
    monkeypatch.setenv("PACSMIG_WIRE", "pynetdicom" if engine == "pynetdicom" else "")
    originals = load_source(site)
    expected_uids = {sop_uid_of(f) for f in originals}
    assert site.source.sop_instance_uids() == expected_uids
    spec = site.spec(retrieve)
    plan = site.work / "plan.json"

    out = run_cli("plan", spec, "-o", plan, check=0).stdout
    doc = json.loads(plan.read_text())
    assert sum(a["expected"]["instances"] for a in doc["actions"]) == len(expected_uids)
    assert {a["action"] for a in doc["actions"]} == {"migrate"}
    assert f"{len(expected_uids)} instances) to migrate" in out.replace(",", "")

    shown = run_cli("show", plan, check=0).stdout
    for action in doc["actions"]:
        assert action["study_uid"] in shown

    refused = run_cli("apply", plan, check=3)
    assert "no sign-off" in refused.stderr and "Traceback" not in refused.stderr
    assert site.dest.instance_count() == 0, "nothing may move before sign-off"

    run_cli("approve", plan, "--by", "Dr. Reviewer", "--note", "CHG-1", check=0)
    applied = run_cli("apply", plan, check=0)
    assert f"{len(expected_uids)} instances sent" in applied.stdout.replace(",", "")

    # Independent check through Orthanc's REST API: exact SOP set, every element unchanged.
    assert site.dest.sop_instance_uids() == expected_uids
    assert_same_instances(site.source, site.dest, expected_uids)

    run_cli("verify", plan, check=0)
    report = site.work / "report.html"
    run_cli("report", plan, "-o", report, check=0)
    html = report.read_text()
    assert "Complete: every planned study was verified" in html
    assert "Dr. Reviewer" in html and "CHG-1" in html

    # Idempotent: a second apply sends nothing.
    again = run_cli("apply", plan, check=0)
    assert "0 instances sent" in again.stdout


def test_replan_after_migration_skips_everything(site: Site) -> None:
    originals = load_source(site, studies=2)
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    run_cli("apply", plan, "--auto-approve", check=0)
    approval = json.loads((site.work / "plan.json.approval.json").read_text())
    assert approval["auto"] is True
    plan2 = site.work / "plan2.json"
    out = run_cli("plan", site.spec(), "-o", plan2, check=0).stdout
    doc = json.loads(plan2.read_text())
    assert {(a["action"], a["reason"]) for a in doc["actions"]} == {("skip", "already_complete")}
    assert "0 studies (0 instances) to migrate" in out
    assert len(originals) == site.dest.instance_count()


def test_deleted_instances_are_named_reported_and_restored(site: Site) -> None:
    load_source(site)
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    run_cli("apply", plan, "--auto-approve", check=0)
    before = site.dest.sop_instance_uids()
    victims = sorted(before)[:3]
    for uid in victims:
        assert site.dest.delete_instance(uid)

    verify = run_cli("verify", plan, check=1)
    for uid in victims:
        assert uid in verify.stdout
    report = site.work / "r.html"
    run_cli("report", plan, "-o", report, check=0)
    html = report.read_text()
    assert 'id="verdict">Incomplete:' in html
    assert "<li>3 instances missing at the destination</li>" in html
    for uid in victims:
        assert uid in html

    restored = run_cli("apply", plan, check=0)
    assert "3 instances sent" in restored.stdout
    assert site.dest.sop_instance_uids() == before
    run_cli("verify", plan, check=0)
