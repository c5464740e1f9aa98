"""A stateful model of apply against a destination that fails, aborts and times out at random.

Rules script the fault SCP's next answers (statuses, aborts, delays past the DIMSE timeout,
association rejections), crash apply part-way (an exception from its progress callback) and
resume it. After every step nothing confirmed is missing or was sent again; after every apply
that completes, each planned instance is confirmed at the destination or failed with a reason;
once the faults are healed, one more apply leaves the destination complete.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from pacsmig import api
from pacsmig.apply import executor
from pacsmig.apply.executor import ProgressEvent
from pacsmig.errors import PacsError
from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal
from pacsmig.plan.codec import read_plan
from pacsmig.testing.fault_scp import FaultSCP, abort, delay, raise_error, respond
from tests.conftest import time_limit
from tests.network.test_faults import (
    Source,
    check_safety,
    make_plan,
    start_source,
    write_spec,
)

TEST_TIMEOUT = 240
N_INSTANCES = 12  # 3 studies of 2 series of 2
TIMEOUT = 1.0  # destination.timeout: what a delayed answer must exceed

FAULTS = {
    "out_of_resources": lambda n: respond(0xA700, "busy", times=n),
    "mismatch": lambda n: respond(0xA900, "bad", times=n),
    "cannot_understand": lambda n: respond(0xC000, times=n),
    "unknown": lambda n: respond(0xFFF0, times=n),
    "warning": lambda n: respond(0xB000, "coerced", times=n),
    "handler_raises": lambda n: raise_error(times=n),
    "abort": lambda n: abort(times=n),
    "abort_after_storing": lambda n: abort(keep=True, times=n),
    "timeout": lambda n: delay(TIMEOUT + 0.5, times=n),
    "timeout_after_storing": lambda n: delay(TIMEOUT + 0.5, keep=True, times=n),
}


REJECTIONS = ("rejected_permanently", "rejected_transiently")

# (instance index, or None for "the next requests, whichever instance"; fault; how many
# attempts or associations it lasts, None for every attempt of that instance)
Fault = tuple[int | None, str, int | None]
FAULT_LISTS = st.lists(
    st.tuples(
        st.none() | st.integers(0, N_INSTANCES - 1),
        st.sampled_from(sorted(FAULTS) + list(REJECTIONS)),
        st.sampled_from([1, 2, 3, None]),
    ),
    max_size=4,
)


class Crash(Exception):
    """Stands for the process dying between two instances."""


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """Fail (rather than hang) a test that runs longer than TEST_TIMEOUT."""
    with time_limit(TEST_TIMEOUT):
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    src = start_source(tmp_path_factory.mktemp("source"), studies=3, n_series=2, per_series=2)
    assert len(src.uids) == N_INSTANCES
    try:
        yield src
    finally:
        src.server.stop()


def test_apply_crash_resume_against_a_flaky_destination(
    source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "BACKOFF_SECONDS", (0.01,))
    monkeypatch.setattr(executor, "BREAKER_THRESHOLD", 5)
    uids = sorted(source.uids)

    class FlakyDestination(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.work = Path(tempfile.mkdtemp(prefix="pacsmig-stateful-"))
            self.scp = FaultSCP("FAULTSCP").start()
            spec = write_spec(
                self.work, source, ae_title="FAULTSCP", port=self.scp.port, timeout=TIMEOUT
            )
            self.plan = make_plan(self.work, spec)
            self.journal_path = api.journal_path(self.plan, read_plan(self.plan))

        def journal(self) -> Journal:
            return Journal.open(self.journal_path)

        # -- faults, then apply (possibly crashing), then resume --------------------------
        def script(self, faults: list[Fault]) -> None:
            for target, kind, n in faults:
                if kind in REJECTIONS:
                    transient = kind == "rejected_transiently"
                    self.scp.reject_associations(n or 1, transient=transient, storage_only=True)
                elif target is None:
                    # A default fault lasting "every attempt" would never let anything through.
                    self.scp.script_default(FAULTS[kind](n or 1))
                else:
                    self.scp.script(uids[target], FAULTS[kind](n))

        @initialize(faults=FAULT_LISTS.filter(bool))
        def first_faults(self, faults: list[Fault]) -> None:
            # Faults matter only while instances remain to send: have some before any apply.
            self.script(faults)

        @rule(faults=FAULT_LISTS, heal_first=st.booleans())
        def apply(self, faults: list[Fault], heal_first: bool = False) -> None:
            if heal_first:
                self.scp.clear_faults()
            self.script(faults)
            try:
                api.apply(self.plan)
            except PacsError:
                return  # breaker or permanent rejection: stopped; only safety holds
            self.check_every_instance_accounted_for()

        @rule(faults=FAULT_LISTS, after=st.integers(0, N_INSTANCES))
        def crash_then_resume(self, faults: list[Fault], after: int) -> None:
            self.script(faults)
            seen = 0

            def progress(event: ProgressEvent) -> None:
                nonlocal seen
                seen += 1
                if seen > after:
                    raise Crash

            with contextlib.suppress(Crash, PacsError):
                api.apply(self.plan, progress=progress)
            self.apply([])

        # -- properties -----------------------------------------------------------------
        @invariant()
        def confirmed_is_there_and_never_sent_again(self) -> None:
            with self.journal() as journal:
                check_safety(journal, self.scp)

        def check_every_instance_accounted_for(self) -> None:
            stored = self.scp.stored_uids()
            with self.journal() as journal:
                rows = {r.sop_uid: r for r in journal.instances()}
            assert set(rows) == source.uids
            for uid, row in rows.items():
                if row.state == FAILED:
                    assert row.reason and row.detail, row
                else:
                    assert row.state in (SENT, PRESENT) and uid in stored, row

        def teardown(self) -> None:
            try:
                self.scp.clear_faults()
                api.apply(self.plan)
                assert self.scp.stored_uids() == source.uids
                with self.journal() as journal:
                    check_safety(journal, self.scp)
                    states = {r.state for r in journal.instances()}
                assert states <= {SENT, PRESENT}
            finally:
                self.scp.close()
                shutil.rmtree(self.work, ignore_errors=True)

    run_state_machine_as_test(
        FlakyDestination,
        settings=settings(
            max_examples=14,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
