"""PHI canary: a patient named ZZCANARY runs through plan, apply, verify and report.

The canary may appear where a reviewer needs it (the plan file, `show`, the report), and
nowhere else: not in what plan/approve/apply/verify print at the default log level or with -v,
not in the journal, not in file names, not left behind in the spool.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pacsmig.testing.corpus import generate_study
from tests.integration.conftest import Site, run_cli

CANARY_NAME, CANARY_ID = "ZZCANARY^PHI", "ZZCANARY1"


def test_canary_only_where_a_reviewer_needs_it(site: Site) -> None:
    files = generate_study(
        site.work / "gen", patient_id=CANARY_ID, patient_name=CANARY_NAME, n_series=2, per_series=3
    )
    for f in files:
        assert site.source.upload(f)
    plan = site.work / "plan.json"
    outputs = []
    for verbose in ([], ["-v"]):
        outputs.append(run_cli(*verbose, "plan", site.spec("c-move"), "-o", plan, check=0))
        outputs.append(run_cli(*verbose, "approve", plan, "--by", "rev", check=0))
        outputs.append(run_cli(*verbose, "apply", plan, check=0))
        outputs.append(run_cli(*verbose, "verify", plan, check=0))
        outputs.append(run_cli(*verbose, "report", plan, "-o", site.work / "r.html", check=0))
    for proc in outputs:
        for text in (proc.stdout, proc.stderr):
            assert "ZZCANARY" not in text, f"{proc.args[1:3]} leaked the canary: {text[:500]}"

    assert CANARY_ID in plan.read_text()  # the reviewer's plan
    assert "ZZCANARY" in (site.work / "r.html").read_text()  # the report names the patient
    assert "ZZCANARY" in run_cli("show", plan, check=0).stdout

    journal = site.work / "plan.journal.sqlite"
    with sqlite3.connect(journal) as conn:
        for table in ("instances", "studies", "events", "runs", "verifications"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert "ZZCANARY" not in repr(row), table
    for path in site.work.rglob("*"):
        assert "ZZCANARY" not in path.name
    spool = Path(str(journal) + ".spool")
    assert not spool.exists() or not any(p.is_file() for p in spool.rglob("*"))
