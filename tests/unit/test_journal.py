from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal


def test_hostile_uids_round_trip_through_bound_parameters(tmp_path: Path) -> None:
    evil = "1.2'); DROP TABLE instances; --"
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("apply", "f" * 64, {"by": "x"})
        j.plan_instances(run, evil, [(evil + ".1", '1.2"; --', "1.2.840")])
        j.set_instance(
            run, evil + ".1", FAILED, code=0xA700, reason="out_of_resources", detail="'; --"
        )
        rows = j.instances(evil)
        assert [(r.sop_uid, r.series_uid, r.state, r.code, r.detail) for r in rows] == [
            (evil + ".1", '1.2"; --', FAILED, 0xA700, "'; --")
        ]
        j.finish_run(run, "partial")
    with Journal.open(tmp_path / "j.sqlite") as j:  # reopens: tables intact
        assert j.runs()[0].outcome == "partial"
        assert len(j.instances()) == 1


def test_planning_keeps_existing_states_and_events_record_history(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("apply", "a" * 64, None)
        j.plan_instances(run, "1", [("1.1", "1.0", "c"), ("1.2", "1.0", "c")])
        j.set_instance(run, "1.1", SENT, code=0)
        j.plan_instances(run, "1", [("1.1", "1.0", "c"), ("1.2", "1.0", "c")])
        j.set_instances(run, ["1.2"], PRESENT, "already_at_destination")
        states = {r.sop_uid: r.state for r in j.instances("1")}
        assert states == {"1.1": SENT, "1.2": PRESENT}
        kinds = [e["kind"] for e in j.events(run) if e["sop_uid"]]
        assert kinds == ["sent"]


def test_sop_uids_claimed_by_another_study(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("apply", "a" * 64, None)
        j.plan_instances(run, "study.A", [(f"sop.{i}", "se", "c") for i in range(700)])
        clash = j.claimed_by_other_studies("study.B", ["sop.3", "sop.699", "sop.new"])
        assert clash == {"sop.3": "study.A", "sop.699": "study.A"}
        assert j.claimed_by_other_studies("study.A", ["sop.3"]) == {}


def test_one_apply_per_journal(tmp_path: Path) -> None:
    import pytest

    from pacsmig.api import run_lock
    from pacsmig.errors import InputError

    journal = tmp_path / "p.journal.sqlite"
    with run_lock(journal):
        with pytest.raises(InputError, match="another apply is running on this journal \\(pid "):
            with run_lock(journal):
                pass
    with run_lock(journal):  # released: the next run may start
        pass


def test_a_batch_commits_once_and_keeps_what_was_done_before_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path) as j, Journal.open(path) as other:
        run = j.start_run("apply", "b" * 64, None)
        j.plan_instances(run, "1", [(f"1.{n}", "1.0", "c") for n in range(4)])
        with pytest.raises(RuntimeError), j.batch():
            j.set_instance(run, "1.0", SENT, code=0)
            with j.batch():  # nested: part of the same commit
                j.set_instance(run, "1.1", FAILED, reason="x")
            # Inside the batch another connection sees nothing yet (one commit, later).
            assert {r.sop_uid: r.state for r in other.instances("1")}["1.0"] == "planned"
            with pytest.raises(sqlite3.IntegrityError), j._tx():
                j._conn.execute("UPDATE instances SET state='sent' WHERE sop_uid='1.2'")
                j._conn.execute("INSERT INTO runs(run_id) VALUES (?)", (run,))  # duplicate key
            raise RuntimeError("the breaker trips mid-batch")
        states = {r.sop_uid: r.state for r in other.instances("1")}
    # Committed despite the error; the failed change left nothing half-done.
    assert states == {"1.0": SENT, "1.1": FAILED, "1.2": "planned", "1.3": "planned"}
