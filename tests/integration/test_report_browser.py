"""The report of a real migration (two Orthanc servers) in headless Chromium, and its exports.

Which study lost an instance is learnt from Orthanc's REST API, not from pacsmig.
"""

from __future__ import annotations

import csv
import io
import json

from pacsmig.testing.corpus import generate_corpus
from tests.browser import browser_page
from tests.integration.conftest import Site, run_cli


def test_report_of_a_real_migration_renders_and_filters_in_chromium(site: Site) -> None:
    for f in generate_corpus(site.work / "gen", studies=4, per_series=2):
        site.source.upload(f)
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    run_cli("apply", plan, "--auto-approve", check=0)
    victim = sorted(site.dest.sop_instance_uids())[0]
    tags = site.source.rest_get(f"/instances/{site.source.instance_id_for(victim)}/tags?simplify")
    study_uid, accession = str(tags["StudyInstanceUID"]), str(tags["AccessionNumber"])
    assert site.dest.delete_instance(victim)
    run_cli("verify", plan, check=1)

    report = site.work / "report.html"
    run_cli("report", plan, "-o", report, check=0)
    url = report.as_uri()
    with browser_page() as (page, log):
        page.goto(url)
        page.wait_for_selector("#studies tbody tr.study")
        shot = site.work / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        assert page.inner_text("#f-count") == "4 shown of 4"
        assert "Incomplete:" in page.inner_text("#verdict")

        # The deep link the CLI's users share: only the study that lost an instance.
        page.goto(url + "#status=missing")
        page.wait_for_function(
            "() => document.getElementById('f-count').textContent.startsWith('1 shown')"
        )
        rows = page.eval_on_selector_all(
            "#studies tbody tr.study", "els => els.map(e => [e.dataset.status, e.dataset.uid])"
        )
        assert rows == [["missing", study_uid]]
        page.click("#studies tbody tr.study")
        assert victim in page.inner_text("tr.drill"), "the missing instance is named"

        page.select_option("#f-status", "")
        page.fill("#f-text", accession)
        page.wait_for_function(
            "uid => document.querySelectorAll('#studies tbody tr.study').length === 1"
            " && document.querySelector('#studies tbody tr.study').dataset.uid === uid",
            arg=study_uid,
        )
        assert not log.errors, log.errors
        assert not log.dialogs
        assert {u.split("#")[0] for u in log.requests} == {url}, "the page loads nothing else"

    csv_path = site.work / "report.csv"
    run_cli("report", plan, "-o", csv_path, "--format", "csv", check=0)
    by_study = {r["study_uid"]: r for r in csv.DictReader(io.StringIO(csv_path.read_text()))}
    assert set(by_study) == site.source.study_instance_uids()
    assert (by_study[study_uid]["status"], by_study[study_uid]["missing_count"]) == ("missing", "1")
    assert {r["status"] for uid, r in by_study.items() if uid != study_uid} == {"verified"}

    json_path = site.work / "report.json"
    run_cli("report", plan, "-o", json_path, "--format", "json", check=0)
    doc = json.loads(json_path.read_text())
    assert doc["completeness"]["complete"] is False
    assert doc["completeness"]["migrate_verified"] == 3
    assert sum(b["sent"] for b in doc["timeline"]["buckets"]) == len(
        site.source.sop_instance_uids()
    )
