"""Bad input: one line that says what and where, a non-zero exit code, no traceback."""

from __future__ import annotations

import json

from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.servers import free_port
from tests.integration.conftest import Site, run_cli


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_misspelt_spec_key(site: Site) -> None:
    spec = site.spec()
    spec.write_text(spec.read_text().replace("  retrieve:", "  retreive:"))
    proc = run_cli("plan", spec, "-o", site.work / "p.json", check=2)
    line = _one_line_error(proc.stderr)
    assert "source.retreive: unknown key" in line and "line 11" in line and "retrieve" in line


def test_port_with_nothing_listening(site: Site) -> None:
    proc = run_cli("plan", site.spec(source_port=free_port()), "-o", site.work / "p.json", check=4)
    line = _one_line_error(proc.stderr)
    assert "cannot connect to source" in line and "connection refused" in line


def test_source_rejects_our_called_ae_title(site: Site) -> None:
    proc = run_cli("plan", site.spec(source_aet="WRONGAET"), "-o", site.work / "p.json", check=4)
    line = _one_line_error(proc.stderr)
    assert "rejected the association" in line and "WRONGAET" in line


def test_plan_edited_after_sign_off(site: Site) -> None:
    for f in generate_corpus(site.work / "gen", studies=1):
        site.source.upload(f)
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    run_cli("approve", plan, "--by", "alice", check=0)
    doc = json.loads(plan.read_text())
    doc["actions"][0]["patient"]["id"] = "SOMEONE-ELSE"
    plan.write_text(json.dumps(doc))
    proc = run_cli("apply", plan, check=3)
    assert "changed after" in _one_line_error(proc.stderr)
    assert site.dest.instance_count() == 0
    # A re-signed file with the fingerprint recomputed by hand is still not the signed plan.
    from pacsmig.plan.codec import fingerprint, loads

    doc["fingerprint"] = fingerprint(loads(json.dumps(doc), check_integrity=False))
    plan.write_text(json.dumps(doc))
    proc = run_cli("apply", plan, check=3)
    assert "changed after its sign-off by alice" in _one_line_error(proc.stderr)
    assert site.dest.instance_count() == 0


def test_missing_plan_and_garbage_plan(site: Site) -> None:
    _one_line_error(run_cli("show", site.work / "nope.json", check=2).stderr)
    bad = site.work / "bad.json"
    bad.write_text("{]")
    _one_line_error(run_cli("apply", bad, check=2).stderr)
