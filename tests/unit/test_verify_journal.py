"""What verification leaves in the journal: newest result per study, instances to send again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pacsmig.journal.store import MISSING, SENT, Journal
from pacsmig.verify.compare import ElementDiff, ImageComparison
from pacsmig.verify.counts import StudyCheck, detail_of
from pacsmig.verify.levels import record, study_status
from pacsmig.verify.results import CommitmentCheck, ImageCheck, InstanceProblem, InstanceSetCheck


def _check(study: str, **kw: object) -> StudyCheck:
    base = StudyCheck(study_uid=study, status="verified", expected_instances=3, found_instances=3)
    check = dataclasses.replace(base, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(check, status=study_status(check))


def _journal(tmp_path: Path) -> tuple[Journal, int]:
    j = Journal.open(tmp_path / "j.sqlite")
    run = j.start_run("apply", "f" * 64, None)
    j.plan_instances(run, "S1", [("1.1", "1.0", "c"), ("1.2", "1.0", "c"), ("1.3", "1.0", "c")])
    for sop in ("1.1", "1.2", "1.3"):
        j.set_instance(run, sop, SENT, code=0)
    return j, run


def test_live_rows_and_verify_rows_newest_per_study(tmp_path: Path) -> None:
    j, apply_run = _journal(tmp_path)
    record(j, apply_run, _check("S1", levels=("counts",)))
    record(j, apply_run, _check("S2", levels=("counts",)))
    verify_run = j.start_run("verify", "f" * 64, None)
    record(j, verify_run, _check("S1", levels=("counts",), attributes=()))
    j.finish_run(verify_run, "ok")
    by_study = j.verification_by_study()
    assert {k: v["run_id"] for k, v in by_study.items()} == {"S1": verify_run, "S2": apply_run}
    latest = j.latest_verification()
    assert latest is not None
    run, rows = latest
    assert run.run_id == verify_run and set(rows) == {"S1", "S2"}
    # The apply run is unfinished (live results, apply still running): still reported.
    assert [r.finished_at for r in j.runs("apply")] == [None]


def test_detail_keys_are_the_report_contract(tmp_path: Path) -> None:
    images = ImageCheck(
        sampled=2,
        comparisons=(
            ImageComparison(sop_uid="1.1", equal=True),
            ImageComparison(
                sop_uid="1.2",
                equal=False,
                differences=(
                    ElementDiff(tag="(7FE0,0010)", keyword="PixelData", expected="a", found="b"),
                ),
            ),
        ),
    )
    commitment = CommitmentCheck(
        requested=3, committed=2, failed=(InstanceProblem(sop_uid="1.3", reason="0x0112 x"),)
    )
    check = _check(
        "S1",
        levels=("counts", "instances", "images", "commitment"),
        instance_set=InstanceSetCheck(missing=(), extra=("9.9",)),
        images=images,
        commitment=commitment,
    )
    assert check.status == "images_differ"
    d = detail_of(check)
    assert d["levels"] == ["counts", "instances", "images", "commitment"]
    assert d["instances"] == {"missing": [], "extra": ["9.9"]}
    assert d["images"]["sampled"] == 2 and d["images"]["equal"] == 1
    assert d["images"]["different"] == [
        {
            "sop_uid": "1.2",
            "differences": [
                {"tag": "(7FE0,0010)", "keyword": "PixelData", "expected": "a", "found": "b"}
            ],
        }
    ]
    assert d["images"]["errors"] == []
    assert d["commitment"] == {
        "requested": 3,
        "committed": 2,
        "failed": [{"sop_uid": "1.3", "reason": "0x0112 x"}],
        "timed_out": False,
    }
    for key in ("status", "expected_instances", "found_instances", "series", "attributes", "note"):
        assert key in d
    assert "study_uid" not in d and "instance_set" not in d


def test_marks_for_resend_and_their_lifting(tmp_path: Path) -> None:
    j, run = _journal(tmp_path)
    images = ImageCheck(
        sampled=2,
        comparisons=(
            ImageComparison(sop_uid="1.1", equal=False, differences=()),
            ImageComparison(sop_uid="1.2", equal=True),
        ),
    )
    commitment = CommitmentCheck(
        requested=3, committed=2, failed=(InstanceProblem(sop_uid="1.3", reason="timeout"),)
    )
    record(j, run, _check("S1", images=images, commitment=commitment))
    assert j.needs_resend("S1") == {"1.1", "1.3"}
    reasons = {r.sop_uid: (r.state, r.reason) for r in j.instances("S1")}
    assert reasons["1.1"] == (MISSING, "differs_at_destination")
    assert reasons["1.3"] == (MISSING, "not_committed")
    # A later verification that finds them equal and committed lifts the marks.
    fixed_images = ImageCheck(sampled=1, comparisons=(ImageComparison(sop_uid="1.1", equal=True),))
    record(j, run, _check("S1", images=fixed_images))
    assert j.needs_resend("S1") == {"1.3"}  # commitment did not run: its mark stays
    record(j, run, _check("S1", commitment=CommitmentCheck(requested=3, committed=3)))
    assert j.needs_resend("S1") == set()
    assert {r.state for r in j.instances("S1")} == {SENT}
    # A timed-out request: nothing is committed, everything goes again.
    pending = tuple(
        InstanceProblem(sop_uid=u, reason="not committed (timeout)") for u in ("1.1", "1.2", "1.3")
    )
    timeout = CommitmentCheck(requested=3, committed=0, failed=pending, timed_out=True)
    record(j, run, _check("S1", commitment=timeout))
    assert j.needs_resend("S1") == {"1.1", "1.2", "1.3"}
    # A timeout never lifts a mark, even with nothing listed as failed.
    record(
        j, run, _check("S1", commitment=CommitmentCheck(requested=3, committed=0, timed_out=True))
    )
    assert j.needs_resend("S1") == {"1.1", "1.2", "1.3"}
    j.close()


def test_status_order() -> None:
    missing = InstanceSetCheck(missing=("1.1",))
    failed = CommitmentCheck(
        requested=1, committed=0, failed=(InstanceProblem(sop_uid="x", reason="r"),)
    )
    assert _check("S", instance_set=missing, commitment=failed).status == "missing"
    assert _check("S", commitment=failed).status == "not_committed"
    errors = ImageCheck(sampled=1, errors=(InstanceProblem(sop_uid="x", reason="r"),))
    assert _check("S", images=errors).status == "error"
    assert _check("S", images=errors, commitment=failed).status == "not_committed"
    assert _check("S").status == "verified"
