"""Destination faults: pacsmig's promise, checked at the destination and in the journal.

Every planned instance ends confirmed at the destination or reported failed with a reason;
nothing confirmed is sent twice; no run hangs. The source is a real Orthanc; the destination
is a scriptable fault SCP (pacsmig.testing.fault_scp), or a real Orthanc that is killed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

import pacsmig
from pacsmig import api
from pacsmig.apply import executor
from pacsmig.apply.executor import ApplyResult
from pacsmig.dicomnet.store import DestinationUnavailable
from pacsmig.errors import AssociationRejected, PacsError
from pacsmig.journal.store import FAILED, SENT, Journal
from pacsmig.plan.codec import read_plan
from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.fault_scp import FaultSCP, abort, delay, raise_error, respond
from pacsmig.testing.servers import OrthancServer, free_port, orthanc_binary
from tests.conftest import time_limit

try:
    orthanc_binary()
except FileNotFoundError as exc:  # pragma: no cover - depends on the host
    pytest.skip(f"Orthanc missing: {exc}", allow_module_level=True)

TEST_TIMEOUT = 120  # seconds; no test may hang the suite
SRC_ROOT = str(Path(pacsmig.__file__).resolve().parents[1])
FAST_BACKOFF = (0.01, 0.02, 0.05)


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Fail (rather than hang) a test that runs longer than TEST_TIMEOUT."""
    with time_limit(TEST_TIMEOUT):
        yield


@pytest.fixture()
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", FAST_BACKOFF)


@dataclass
class Source:
    server: OrthancServer
    uids: set[str]  # SOP Instance UIDs held
    by_study: dict[str, list[str]]  # study UID -> SOP Instance UIDs, sorted


def start_source(workdir: Path, *, studies: int, n_series: int, per_series: int) -> Source:
    server = OrthancServer(
        workdir / "orthanc",
        aet="LEGACY",
        modalities={"pacsmig": ("PACSMIG", "127.0.0.1", free_port())},
    )
    server.start()
    files = generate_corpus(
        workdir / "gen", studies=studies, n_series=n_series, per_series=per_series, rows=16, cols=16
    )
    by_study: dict[str, list[str]] = {}
    for path in files:
        assert server.upload(path) is not None
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(str(ds.SOPInstanceUID))
    uids = {u for v in by_study.values() for u in v}
    return Source(server=server, uids=uids, by_study={k: sorted(v) for k, v in by_study.items()})


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """3 studies of 4 instances: small enough that each scenario takes a few seconds."""
    src = start_source(tmp_path_factory.mktemp("source"), studies=3, n_series=2, per_series=2)
    try:
        yield src
    finally:
        src.server.stop()


@pytest.fixture()
def scp() -> Iterator[FaultSCP]:
    with FaultSCP("FAULTSCP") as server:
        yield server


def write_spec(work: Path, src: Source, *, ae_title: str, port: int, timeout: float = 10.0) -> Path:
    spec = work / "spec.yaml"
    spec.write_text(
        f"""\
version: 1
name: faults
local:
  ae_title: PACSMIG
source:
  kind: dimse
  ae_title: LEGACY
  host: 127.0.0.1
  port: {src.server.dicom_port}
  retrieve: c-get
  timeout: 20
destination:
  ae_title: {ae_title}
  host: 127.0.0.1
  port: {port}
  timeout: {timeout}
"""
    )
    return spec


def make_plan(work: Path, spec: Path) -> Path:
    plan = work / "plan.json"
    api.plan(spec, plan)
    api.approve(plan, by="tester")
    return plan


@dataclass
class Rig:
    source: Source
    scp: FaultSCP
    plan: Path

    def apply(self) -> ApplyResult:
        return api.apply(self.plan)

    def journal(self) -> Journal:
        return Journal.open(api.journal_path(self.plan, read_plan(self.plan)))


def rig_for(tmp_path: Path, source: Source, scp: FaultSCP, *, timeout: float = 10.0) -> Rig:
    spec = write_spec(tmp_path, source, ae_title=scp.ae_title, port=scp.port, timeout=timeout)
    return Rig(source=source, scp=scp, plan=make_plan(tmp_path, spec))


# --------------------------------------------------------------------------- #
# invariants
# --------------------------------------------------------------------------- #


def _epoch(at: str) -> float:
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def sent_events(journal: Journal) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for e in journal.events():
        if e["sop_uid"] and e["kind"] == SENT:
            out.setdefault(e["sop_uid"], []).append(_epoch(e["at"]))
    return out


def check_safety(journal: Journal, scp: FaultSCP) -> None:
    """Whatever happened: confirmed means at the destination, and never sent again."""
    sent = sent_events(journal)
    assert all(len(times) == 1 for times in sent.values()), "an instance was confirmed twice"
    stored = scp.stored_uids()
    assert set(sent) <= stored, "journal says sent, the destination does not hold it"
    # The journal is written after the answer arrives, at millisecond resolution: a request
    # arriving later than that was sent again after confirmation.
    late = [
        a.sop_uid for a in scp.attempts() if a.sop_uid in sent and a.at > sent[a.sop_uid][0] + 0.002
    ]
    assert not late, f"{len(late)} C-STORE requests after the instance was confirmed"


def check_complete_or_failed(journal: Journal, scp: FaultSCP, planned: set[str]) -> set[str]:
    """After an apply that completed: each planned instance stored, or failed with a reason.

    Returns the instances reported failed; the destination holds exactly the others.
    """
    check_safety(journal, scp)
    rows = {r.sop_uid: r for r in journal.instances()}
    assert set(rows) == planned
    failed = {uid for uid, r in rows.items() if r.state == FAILED}
    for uid in failed:
        assert rows[uid].reason and rows[uid].detail, f"failed without a reason: {rows[uid]}"
    assert scp.stored_uids() == planned - failed
    for uid, row in rows.items():
        if uid not in failed:
            assert row.state in (SENT, "present"), row
    return failed


def attempts_of(scp: FaultSCP, uid: str) -> int:
    return len(scp.attempts(uid))


def run_cli(*args: str, patch: str = "", timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`pacsmig ...` in a fresh process, with executor constants patched first."""
    code = f"import pacsmig.apply.executor as e\n{patch}\nfrom pacsmig.cli.main import run\nrun()"
    env = {**os.environ, "PYTHONPATH": SRC_ROOT, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def error_line(stderr: str) -> str:
    """The one error line, last on stderr (progress bars may be left above it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


# --------------------------------------------------------------------------- #
# (1) out of resources: retried; a destination that keeps refusing trips the breaker
# --------------------------------------------------------------------------- #


def test_out_of_resources_is_retried_until_stored_once(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """0xA7xx on some instances, then success: retried, every instance stored exactly once."""
    rig = rig_for(tmp_path, source, scp)
    uids = sorted(source.uids)
    scp.script(uids[0], respond(0xA700, "disk full", times=2))
    scp.script(uids[1], respond(0xA702, times=3))
    scp.script(uids[2], respond(0xA7FF, times=1))

    result = rig.apply()

    assert result.ok and result.sent == len(uids)
    assert scp.stored_counts() == dict.fromkeys(uids, 1)
    assert [attempts_of(scp, u) for u in uids[:3]] == [3, 4, 2]
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == set()


def test_out_of_resources_on_every_attempt_fails_the_instance_and_goes_on(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """An instance refused on every attempt is failed (bounded attempts); the others go."""
    rig = rig_for(tmp_path, source, scp)
    stubborn = sorted(source.uids)[0]
    scp.script(stubborn, respond(0xA700, "quota"))

    result = rig.apply()

    assert result.failed == 1 and result.failure_reasons == Counter(out_of_resources=1)
    assert attempts_of(scp, stubborn) == executor.MAX_ATTEMPTS
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == {stubborn}
        row = next(r for r in journal.instances() if r.sop_uid == stubborn)
    assert row.code == 0xA700 and "quota" in row.detail and row.reason == "out_of_resources"


def test_breaker_stops_a_run_against_a_destination_that_keeps_refusing(
    tmp_path: Path, source: Source, scp: FaultSCP
) -> None:
    """Always 0xA700 after 3 stores: the breaker stops the run, exit code 4 and one line;
    what was sent is kept, and the next apply completes without sending it again."""
    rig = rig_for(tmp_path, source, scp)
    scp.script_default(respond(0x0000, times=3), respond(0xA700, "out of space"))
    patch = "e.BACKOFF_SECONDS = (0.01,)\ne.BREAKER_THRESHOLD = 6"

    proc = run_cli("apply", str(rig.plan), patch=patch)

    assert proc.returncode == 4, proc.stderr
    line = error_line(proc.stderr)
    assert line.startswith("error: destination FAULTSCP at 127.0.0.1:")
    assert "6 times in a row" in line and "0xA700" in line
    assert "3 instances sent in this run are kept" in line
    first = scp.stored_uids()
    assert len(first) == 3
    assert len(scp.attempts()) == 3 + 6, "bounded: the breaker counts across instances"
    with rig.journal() as journal:
        check_safety(journal, scp)
        assert journal.runs("apply")[-1].outcome == "failed"
        assert {r.sop_uid for r in journal.instances() if r.state == SENT} == first
        # 4 attempts failed the 4th instance; the 5th, in hand when the breaker tripped, says so.
        reasons = Counter(r.reason for r in journal.instances() if r.state == FAILED)
        assert reasons == Counter(out_of_resources=1, destination_unavailable=1)

    scp.clear_faults()
    before = Counter(a.sop_uid for a in scp.attempts())
    proc = run_cli("apply", str(rig.plan))
    assert proc.returncode == 0, proc.stderr
    assert scp.stored_uids() == source.uids
    again = Counter(a.sop_uid for a in scp.attempts()) - before
    assert not set(again) & first, "confirmed instances were sent again"
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == set()


# --------------------------------------------------------------------------- #
# (2) permanent failures: failed with code and comment, not retried, the run goes on
# --------------------------------------------------------------------------- #


def test_permanent_failures_are_reported_once_and_the_run_goes_on(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """0xA900, 0xC000, 0x0122, 0xFFF0, 0x0124 and a raising handler (0xC211): each instance
    failed with its code and comment after exactly one attempt; every other one stored once."""
    rig = rig_for(tmp_path, source, scp)
    uids = sorted(source.uids)
    expected = {
        uids[0]: (0xA900, "data_set_mismatch", "does not match"),
        uids[1]: (0xC000, "cannot_understand", "cannot parse"),
        uids[2]: (0x0122, "sop_class_not_supported", "SOP class not supported"),
        uids[3]: (0xFFF0, "rejected", "unknown status"),
        uids[4]: (0xC211, "cannot_understand", "storage handler"),
        uids[5]: (0x0124, "not_authorised", "not authorised"),
    }
    scp.script(uids[0], respond(0xA900, "does not match"))
    scp.script(uids[1], respond(0xC000, "cannot parse"))
    scp.script(uids[2], respond(0x0122))
    scp.script(uids[3], respond(0xFFF0))
    scp.script(uids[4], raise_error())
    scp.script(uids[5], respond(0x0124))

    result = rig.apply()

    assert result.failed == len(expected) and result.sent == len(uids) - len(expected)
    for uid in expected:
        assert attempts_of(scp, uid) == 1, "a permanent failure was retried unchanged"
    with rig.journal() as journal:
        failed = check_complete_or_failed(journal, scp, source.uids)
        rows = {r.sop_uid: r for r in journal.instances()}
    assert failed == set(expected)
    for uid, (code, reason, text) in expected.items():
        assert (rows[uid].code, rows[uid].reason) == (code, reason)
        assert text in rows[uid].detail and f"0x{code:04X}" in rows[uid].detail
    assert set(scp.stored_counts().values()) == {1}


# --------------------------------------------------------------------------- #
# (3) warnings: stored, the warning recorded
# --------------------------------------------------------------------------- #


def test_warnings_are_sent_with_the_warning_recorded(
    tmp_path: Path, source: Source, scp: FaultSCP
) -> None:
    """0xB000, 0xB006, 0xB007: stored once, journaled as sent with the code and a warning detail."""
    rig = rig_for(tmp_path, source, scp)
    uids = sorted(source.uids)
    warnings = {uids[0]: 0xB000, uids[1]: 0xB006, uids[2]: 0xB007}
    scp.script(uids[0], respond(0xB000, "coerced PatientName"))
    scp.script(uids[1], respond(0xB006))
    scp.script(uids[2], respond(0xB007))

    result = rig.apply()

    assert result.ok and result.sent == len(uids)
    assert scp.stored_counts() == dict.fromkeys(uids, 1)
    with rig.journal() as journal:
        check_complete_or_failed(journal, scp, source.uids)
        rows = {r.sop_uid: r for r in journal.instances()}
    for uid, code in warnings.items():
        assert rows[uid].state == SENT and rows[uid].code == code
        assert "warning" in rows[uid].detail
    assert "coerced PatientName" in rows[uids[0]].detail
    assert all(rows[u].code == 0 and rows[u].detail == "" for u in uids[3:])


# --------------------------------------------------------------------------- #
# (4) association rejected: permanently -> one-line error; transiently -> retried
# --------------------------------------------------------------------------- #


def test_permanent_rejection_is_a_one_line_error_naming_the_ae_titles(
    tmp_path: Path, source: Source, scp: FaultSCP
) -> None:
    """Every association rejected permanently: exit code 4, one line naming both AE titles,
    no second try, nothing stored."""
    rig = rig_for(tmp_path, source, scp)
    scp.reject_associations(100, transient=False)

    proc = run_cli("apply", str(rig.plan))

    assert proc.returncode == 4, proc.stderr
    line = error_line(proc.stderr)
    assert "permanently rejected" in line
    assert "FAULTSCP" in line and "PACSMIG" in line
    assert scp.associations_rejected == 1, "a permanent rejection was retried"
    assert scp.stored_uids() == set()


def test_permanent_rejection_of_storage_stops_the_run_without_retrying(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """Queries are accepted but storage is not: stop at the first C-STORE association."""
    rig = rig_for(tmp_path, source, scp)
    scp.reject_associations(100, transient=False, storage_only=True)

    with pytest.raises(AssociationRejected) as info:
        rig.apply()

    assert not info.value.transient
    assert "FAULTSCP" in str(info.value) and "PACSMIG" in str(info.value)
    assert scp.associations_rejected == 1
    assert scp.attempts() == []
    with rig.journal() as journal:
        assert journal.runs("apply")[-1].outcome == "failed"


def test_transient_rejection_is_retried_and_the_run_completes(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """Storage associations rejected transiently twice: backed off, retried, all stored once."""
    rig = rig_for(tmp_path, source, scp)
    scp.reject_associations(2, transient=True, storage_only=True)

    result = rig.apply()

    assert result.ok
    assert scp.associations_rejected == 2
    assert scp.stored_counts() == dict.fromkeys(source.uids, 1)
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == set()


# --------------------------------------------------------------------------- #
# (5) abort mid-transfer and DIMSE timeout: in doubt, re-associated, re-sent
# --------------------------------------------------------------------------- #


def test_abort_mid_transfer_is_in_doubt_and_resent(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """The SCP aborts instead of answering (once after storing, once and twice before): each
    instance is in doubt, sent again on a new association, and ends stored and journaled."""
    rig = rig_for(tmp_path, source, scp)
    uids = sorted(source.uids)
    scp.script(uids[0], abort(times=1))  # lost before storing
    scp.script(uids[1], abort(keep=True, times=1))  # stored, but the answer never left
    scp.script(uids[2], abort(times=2))

    result = rig.apply()

    assert result.ok and result.sent == len(uids)
    counts = scp.stored_counts()
    assert (counts[uids[0]], counts[uids[1]], counts[uids[2]]) == (1, 2, 1)
    assert [attempts_of(scp, u) for u in uids[:3]] == [2, 2, 3]
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == set()


def test_dimse_timeout_from_the_spec_is_in_doubt_and_resent(
    tmp_path: Path, source: Source, scp: FaultSCP, fast_backoff: None
) -> None:
    """destination.timeout: 1.5 s; the SCP answers after 4 s once: re-sent after ~1.5 s."""
    rig = rig_for(tmp_path, source, scp, timeout=1.5)
    uid = sorted(source.uids)[0]
    scp.script(uid, delay(4.0, times=1))

    result = rig.apply()

    assert result.ok and result.sent == len(source.uids)
    first, second = scp.attempts(uid)
    assert 1.4 <= second.at - first.at < 3.5, "the spec's timeout decides when to give up"
    assert scp.stored_counts()[uid] >= 1
    with rig.journal() as journal:
        assert check_complete_or_failed(journal, scp, source.uids) == set()
        row = next(r for r in journal.instances() if r.sop_uid == uid)
    assert row.state == SENT


def test_destination_that_never_answers_trips_the_breaker(
    tmp_path: Path, source: Source, scp: FaultSCP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer ever (1 s timeout): bounded by the breaker, not a hang."""
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", (0.01,))
    monkeypatch.setattr(executor, "BREAKER_THRESHOLD", 3)
    rig = rig_for(tmp_path, source, scp, timeout=1.0)
    scp.script_default(delay(30.0, keep=False))
    started = time.monotonic()

    with pytest.raises(DestinationUnavailable, match="3 times in a row"):
        rig.apply()

    assert time.monotonic() - started < 20
    assert len(scp.attempts()) == 3
    with rig.journal() as journal:
        check_safety(journal, scp)
        assert journal.runs("apply")[-1].outcome == "failed"
        failed = [r for r in journal.instances() if r.state == FAILED]
    assert [(r.reason, r.detail) for r in failed] == [
        ("destination_unavailable", "no response: no data from the peer within the timeout")
    ]


# --------------------------------------------------------------------------- #
# (6) a real destination killed mid-apply and restarted
# --------------------------------------------------------------------------- #


def test_destination_killed_and_restarted_mid_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc as destination, SIGKILLed once 20 instances are in, restarted at once.

    Either apply survives (re-associates after backoff) or it stops with a PacsError and the
    next apply completes; the destination ends holding every instance.
    """
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", (0.2, 0.5, 1.0))
    src = start_source(tmp_path / "src", studies=2, n_series=2, per_series=15)
    dest = OrthancServer(
        tmp_path / "dest",
        aet="NEWPACS",
        modalities={"pacsmig": ("PACSMIG", "127.0.0.1", free_port())},
    )
    dest.start()
    try:
        spec = write_spec(tmp_path, src, ae_title="NEWPACS", port=dest.dicom_port)
        plan = make_plan(tmp_path, spec)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                api.apply(plan)
            except PacsError as exc:
                errors.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while dest.instance_count() < 20 and worker.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert worker.is_alive(), "apply finished before the kill: grow the corpus"
        dest.kill()
        time.sleep(0.3)
        dest.start()
        worker.join(60)
        assert not worker.is_alive()
        if errors:  # it may stop when a study's query hits the dead destination
            api.apply(plan)
        assert dest.sop_instance_uids() == src.uids
        with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
            assert all(len(v) == 1 for v in sent_events(journal).values())
            states = Counter(r.state for r in journal.instances())
        assert set(states) <= {SENT, "present"} and sum(states.values()) == len(src.uids)
    finally:
        dest.stop()
        src.server.stop()


# --------------------------------------------------------------------------- #
# (11) pacsmig SIGKILLed at random points, 20 times over one migration
# --------------------------------------------------------------------------- #


def _runs_started(journal: Path) -> int:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigkill_loop_then_resume_completes_without_resending(tmp_path: Path) -> None:
    """`pacsmig apply` SIGKILLed 20 times at seeded random points, then run to the end: the
    destination ends complete, and no instance journaled as sent is ever sent again."""
    kills = 20
    rng = random.Random(11)
    src = start_source(tmp_path / "src", studies=6, n_series=2, per_series=5)
    try:
        with FaultSCP("FAULTSCP") as dest:
            # ~20 stores/s: slow enough that most kills land mid-migration.
            dest.script_default(delay(0.05))
            spec = write_spec(tmp_path, src, ae_title="FAULTSCP", port=dest.port)
            plan = make_plan(tmp_path, spec)
            journal_file = api.journal_path(plan, read_plan(plan))
            command = [sys.executable, "-m", "pacsmig", "apply", str(plan)]
            env = {**os.environ, "PYTHONPATH": SRC_ROOT}
            mid_run = 0
            for n in range(kills):
                proc = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
                )
                # Python's imports take about a second: wait until the run is journaled, then
                # kill at a seeded random point of querying, retrieving, sending, journaling.
                deadline = time.monotonic() + 30
                while _runs_started(journal_file) <= n and proc.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.6))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                mid_run += 0 < len(dest.stored_uids()) < len(src.uids)

            final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)

            assert final.returncode == 0, final.stderr
            assert mid_run >= kills // 2, f"only {mid_run} kills landed mid-migration"
            assert dest.stored_uids() == src.uids
            with Journal.open(journal_file) as journal:
                check_complete_or_failed(journal, dest, src.uids)
                assert max(len(v) for v in sent_events(journal).values()) == 1
    finally:
        src.server.stop()
