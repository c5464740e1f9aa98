"""apply killed with SIGKILL mid-run, then run again: the destination ends complete."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter

from pacsmig.testing.corpus import generate_corpus
from tests.integration.conftest import PACSMIG, Site, run_cli


def _sent_count(journal: str) -> int:
    try:
        with sqlite3.connect(journal, timeout=1) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM instances WHERE state='sent'").fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def test_sigkill_then_resume_completes_without_resending(site: Site) -> None:
    files = generate_corpus(site.work / "gen", studies=8, per_series=20, rows=128, cols=128)
    expected = {site.source.upload(f) for f in files}
    assert None not in expected
    uids = site.source.sop_instance_uids()
    plan = site.work / "plan.json"
    run_cli("plan", site.spec("c-move"), "-o", plan, check=0)
    run_cli("approve", plan, "--by", "tester", check=0)
    journal = str(site.work / "plan.journal.sqlite")

    for _round in range(2):
        proc = subprocess.Popen(
            [PACSMIG, "apply", str(plan)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        target = _sent_count(journal) + 40
        while _sent_count(journal) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 0 < site.dest.instance_count() < len(uids), "the kill should land mid-run"

    run_cli("apply", plan, check=0)
    assert site.dest.sop_instance_uids() == uids
    run_cli("verify", plan, check=0)

    # Nothing confirmed was sent twice: at most one 'sent' event per instance.
    with sqlite3.connect(journal) as conn:
        sent = Counter(r[0] for r in conn.execute("SELECT sop_uid FROM events WHERE kind='sent'"))
        states = dict(
            conn.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall()
        )
    assert max(sent.values()) == 1
    assert sum(states.values()) == len(uids)
    assert set(states) <= {"sent", "present"}
