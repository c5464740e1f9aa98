"""The commitment level end to end: verify asks, a scripted destination fails some instances or
never answers, the journal marks them for apply to send again, a later answer lifts the marks."""

from __future__ import annotations

from pathlib import Path

from pacsmig import api
from pacsmig.journal.store import Journal
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.fault_scp import FaultSCP
from pacsmig.testing.servers import LOOPBACK, free_port
from tests.integration.helpers import sop_uid_of


def test_failed_and_timed_out_commitment_marks_instances_for_resend(tmp_path: Path) -> None:
    files = generate_study(
        tmp_path / "raid", patient_id="P1", patient_name="A^B", n_series=2, per_series=2
    )
    uids = sorted(sop_uid_of(f) for f in files)
    local_port = free_port()
    with FaultSCP("DEST", timeout=10, commitment=True) as dest:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            f"version: 1\nname: t\nlocal: {{ae_title: PACSMIG, port: {local_port}}}\n"
            "source: {kind: filesystem, roots: [raid]}\n"
            f"destination: {{ae_title: DEST, host: {LOOPBACK}, port: {dest.port}, timeout: 10}}\n"
            "verify: {levels: [counts, instances, commitment], commitment_timeout: 5}\n"
        )
        plan = tmp_path / "plan.json"
        api.plan(spec, plan)
        # Apply verifies live, commitment included: everything committed then.
        dest.storage_commitment("same")
        assert api.apply(plan, auto_approve=True).ok
        journal = tmp_path / "plan.journal.sqlite"
        with Journal.open(journal) as j:
            live = j.latest_verification()
            assert live is not None and live[0].kind == "apply"
            assert [r["status"] for r in live[1].values()] == ["verified"]
        assert len(dest.commitment_requests()) == 1

        dest.storage_commitment(
            "separate", fail={uids[2]: 0x0110}, report_to=("PACSMIG", LOOPBACK, local_port)
        )
        result = api.verify(plan)
        (check,) = result.checks
        assert check.status == "not_committed" and not result.ok
        assert check.commitment is not None
        assert (check.commitment.requested, check.commitment.committed) == (4, 3)
        assert [(f.sop_uid, f.reason) for f in check.commitment.failed] == [
            (uids[2], "0x0110 processing failure")
        ]
        request = dest.commitment_requests()[-1]
        assert sorted(request.sop_uids) == uids and request.reported_failed == (uids[2],)
        with Journal.open(journal) as j:
            assert j.needs_resend(check.study_uid) == {uids[2]}

        # No report at all: every instance is uncommitted, the timeout is said.
        dest.storage_commitment("none")
        (check,) = api.verify(plan).checks
        assert check.commitment is not None and check.commitment.timed_out
        assert check.status == "not_committed" and "not committed (timeout)" in check.note
        with Journal.open(journal) as j:
            # Not committed in time: all of it goes again with the next apply.
            assert j.needs_resend(check.study_uid) == set(uids)

        # Reported on the request's own association, all committed: the mark is lifted.
        dest.storage_commitment("same")
        (check,) = api.verify(plan).checks
        assert check.status == "verified"
        with Journal.open(journal) as j:
            assert j.needs_resend(check.study_uid) == set()
            row = j.latest_verification()
            assert row is not None
            assert row[1][check.study_uid]["detail"]["commitment"] == {
                "requested": 4,
                "committed": 4,
                "failed": [],
                "timed_out": False,
            }
