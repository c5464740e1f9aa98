"""Walk an approved plan as one pipeline: retrieve, process, send, confirm, journal.

Apply executes the plan; it does not re-decide it. A study whose source holdings changed
since planning is refused with a reason. What is already at the destination is not sent
again, so apply is idempotent and resumes after a crash or Ctrl-C.

The stages overlap. `source.parallel` retrieval threads each take the next study in plan
order, check it, and retrieve what the destination lacks into a spool; every instance is
handed to the send stage the moment it is on disk, through a bounded queue (memory and spool
stay flat however large the migration). `destination.associations` sender processes
(apply/senders.py) apply the planned corrections, transcode where the destination asks, and
C-STORE. The main thread journals every outcome and closes a study when its last instance is
answered. Studies planned `direct` are moved by the source straight to the destination
(C-MOVE to `destination.move_ae`) and confirmed there by an instance-level query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsmig.apply.senders import SenderConfig, SenderPool, SendJob, SendResult
from pacsmig.apply.sources import DimseAccess, SourceAccess, image_requests, open_source
from pacsmig.apply.spool import SpooledInstance, StudySpool
from pacsmig.dicomnet.find import open_find
from pacsmig.dicomnet.retrieve import RetrieveRequest
from pacsmig.dicomnet.status import StoreOutcome
from pacsmig.dicomnet.store import DestinationUnavailable
from pacsmig.errors import AssociationRejected, PacsError, PacsmigError
from pacsmig.inventory.dimse import peer_of
from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import Plan, StudyAction
from pacsmig.spec.load import spec_of_plan
from pacsmig.spec.model import DimseSource, Spec
from pacsmig.verify.live import LiveVerifier, LiveVerifierProcess, needs_apply_process

log = logging.getLogger(__name__)

# Attempts per instance while the destination answers "out of resources", does not answer,
# or cannot be associated with. Permanent failures are never retried unchanged.
MAX_ATTEMPTS = 4
# Wait before the n-th attempt after n transient failures in a row (the last value repeats);
# tests patch these to run fast.
BACKOFF_SECONDS: tuple[float, ...] = (0.5, 2.0, 5.0)
# Circuit breaker: this many transient failures in a row, across instances, studies and
# associations, stop the run (DestinationUnavailable); what was sent stays journaled.
BREAKER_THRESHOLD = 10
# Re-query the destination this often after a direct move before calling instances missing
# (a PACS may index what it received a moment after answering the C-MOVE).
DIRECT_CONFIRM_TRIES = 3
# After a retrieval error, how long the send outcomes already under way are still journaled.
DRAIN_SECONDS = 30.0
# Send outcomes journalled in one commit at most (they are all already answered by the PACS).
RESULTS_PER_COMMIT = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    studies_done: int
    studies_total: int
    instances_done: int
    instances_total: int
    bytes_sent: int
    waiting: str = ""  # why the run is paused (outside the schedule), if it is


Progress = Callable[[ProgressEvent], None]


@dataclass(slots=True, kw_only=True)
class ApplyResult:
    run_id: int
    studies_total: int = 0
    studies_complete: int = 0
    studies_incomplete: int = 0
    studies_refused: int = 0
    sent: int = 0
    sent_direct: int = 0
    present: int = 0
    failed: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    verified: int = 0  # studies verified at the destination while apply ran
    verification: dict[str, int] = field(default_factory=dict)  # status -> studies
    failure_reasons: Counter[str] = field(default_factory=Counter)
    refusal_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (
            self.failed or self.studies_incomplete or self.studies_refused or self.interrupted
        )


@dataclass(slots=True)
class _Study:
    """A study in flight: closed when retrieval has ended and every send is answered."""

    action: StudyAction
    spool: StudySpool | None = None
    pending: int = 0
    fetch_done: bool = False
    failed: int = 0
    closed: bool = False
    queued: set[str] = field(default_factory=set)
    found: list[InstanceRecord] | None = None  # the destination's answer after a direct move


class _Stop(Exception):
    """Raised inside a retrieval thread to abandon its study (the run is stopping)."""


class Executor:
    def __init__(
        self,
        plan: Plan,
        journal: Journal,
        *,
        spool_root: Path,
        approval: dict[str, object] | None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        index_path: Path | None = None,
        gate: Any = None,
    ) -> None:
        self.plan = plan
        self.spec: Spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
        self.journal = journal
        self.spool_root = spool_root
        self.approval = approval
        self.progress = progress
        self.stop = stop or threading.Event()
        self.index_path = index_path
        self.destination = peer_of(self.spec.destination, "destination")
        self.calling = self.spec.local.ae_title
        self._lock = threading.Lock()
        self._studies: dict[str, _Study] = {}
        self._todo: queue.Queue[StudyAction] = queue.Queue()
        self._error: BaseException | None = None
        self._error_at = 0.0
        self._threads_done = 0
        self._threads = 0
        self._retrieving = threading.BoundedSemaphore(1)
        self._first_contact = threading.Event()
        self._studies_total = 0
        self._instances_total = 0
        self._studies_done = 0
        self._instances_done = 0
        self._job_ids = 0
        self._modified_at = ""
        self._pool: SenderPool | None = None
        self._source: SourceAccess | None = None
        self._gate: Any = gate  # the schedule's Gate; tests pass one with a fake clock
        self._verifier: Any = None
        self._closed_unsubmitted: list[tuple[str, Any]] = []
        self._result = ApplyResult(run_id=0)

    # -- run ----------------------------------------------------------------------------
    def run(self) -> ApplyResult:
        todo = self.plan.by_action("migrate")
        run_id = self.journal.start_run("apply", fingerprint(self.plan), self.approval)
        result = self._result = ApplyResult(run_id=run_id, studies_total=len(todo))
        self._studies_total = len(todo)
        self._instances_total = sum(a.instance_count for a in todo)
        self._modified_at = dt.datetime.now(dt.UTC).isoformat()
        if self._gate is None:
            self._gate = _gate_for(self.spec)
        # Leftovers of an interrupted run (the run lock guarantees no other apply uses them).
        shutil.rmtree(self.spool_root, ignore_errors=True)
        started = time.monotonic()
        outcome = "failed"
        try:
            with contextlib.ExitStack() as stack:
                if todo:
                    stack.callback(self._close_pool)
                    # Before any thread of ours exists: the workers are forked from here.
                    self._pool = self._start_pool()
                    separate = not needs_apply_process(self.plan)
                    if separate:
                        self._verifier = stack.enter_context(
                            LiveVerifierProcess(
                                self.plan,
                                self.journal.path,
                                index_path=self.index_path,
                                run_id=run_id,
                            )
                        )
                    self._source = stack.enter_context(open_source(self.spec, self.index_path))
                    if not separate:
                        self._verifier = stack.enter_context(self._live_verifier(run_id))
                    for action in todo:
                        self._todo.put(action)
                    self._run_pipeline(run_id)
                    summary = self._verifier.close()
                    result.verified = summary.verified
                    result.verification = dict(summary.statuses)
            outcome = "interrupted" if result.interrupted else ("ok" if result.ok else "partial")
        except KeyboardInterrupt:
            result.interrupted = True
            outcome = "interrupted"
            raise
        finally:
            result.seconds = time.monotonic() - started
            self.journal.finish_run(run_id, outcome)
        return result

    def _start_pool(self) -> SenderPool:
        dst = self.spec.destination
        return SenderPool(
            SenderConfig(
                calling_ae_title=self.calling,
                destination=dst,
                associations=dst.associations,
                syntaxes=dst.syntaxes,
                lossy=dst.lossy,
                max_attempts=MAX_ATTEMPTS,
                backoff=BACKOFF_SECONDS,
                breaker_threshold=BREAKER_THRESHOLD,
            )
        ).start()

    def _close_pool(self) -> None:
        if self._pool is not None:
            # After an error or an interrupt nothing more is journaled: stop at once (what is
            # in flight is re-checked at the destination by the next apply).
            clean = self._error is None and not self.stop.is_set()
            self._pool.close(wait=clean)
            self._pool = None

    @contextlib.contextmanager
    def _live_verifier(self, run_id: int) -> Iterator[Any]:
        """Verification in apply's process, sharing its source access and SCP."""
        with LiveVerifier(
            self.plan,
            self.journal.path,
            index_path=self.index_path,
            run_id=run_id,
            source=self._source,
        ) as verifier:
            yield verifier

    def _run_pipeline(self, run_id: int) -> None:
        parallel = max(1, getattr(self.spec.source, "parallel", 1))
        # `parallel` retrievals at once, and one more thread that prepares the next study
        # (source and destination queries) or confirms the last one while they run: without
        # it the source idles through every study's queries (direct at parallel 1: 0.8 of
        # movescu, measured).
        self._retrieving = threading.BoundedSemaphore(parallel)
        self._threads = min(parallel + 1, self._todo.qsize())
        threads = [
            threading.Thread(
                target=self._retrieval_thread, args=(run_id, n), name=f"retrieve-{n}", daemon=True
            )
            for n in range(self._threads)
        ]
        for t in threads:
            t.start()
        try:
            self._collect(run_id)
        except BaseException:
            self.stop.set()
            raise
        finally:
            # A retrieval blocked on a peer ends with the peer's timeout; do not wait that out.
            for t in threads:
                t.join(5.0 if self.stop.is_set() else None)
        if self._error is not None:
            raise self._error
        if self.stop.is_set():
            self._result.interrupted = True

    def _collect(self, run_id: int) -> None:
        """The main thread journals send outcomes until every study is closed."""
        while True:
            pool = self._pool
            r = pool.result(0.2) if pool is not None else None
            if r is not None:
                assert pool is not None
                try:
                    # Outcomes that arrived together share one journal commit; studies they
                    # close go to verification only once that commit is made.
                    with self.journal.batch():
                        self._on_result(run_id, r)
                        for _ in range(RESULTS_PER_COMMIT - 1):
                            more = pool.result_nowait()
                            if more is None:
                                break
                            self._on_result(run_id, more)
                finally:
                    self._submit_closed()
                continue
            if pool is None:
                time.sleep(0.05)
            with self._lock:
                pending = sum(s.pending for s in self._studies.values())
                threads_done = self._threads_done == self._threads
            # After an error, journal what the senders still answer (briefly), then stop.
            if self._error is not None and (
                not pending or time.monotonic() - self._error_at > DRAIN_SECONDS
            ):
                return
            if threads_done and pending == 0:
                return
            if pending and pool is not None and not pool.alive():
                raise PacsmigError("the sender processes exited unexpectedly")

    def _report(self, waiting: str = "") -> None:
        if self.progress is not None:
            self.progress(
                ProgressEvent(
                    studies_done=self._studies_done,
                    studies_total=self._studies_total,
                    instances_done=self._instances_done,
                    instances_total=self._instances_total,
                    bytes_sent=self._result.bytes_sent,
                    waiting=waiting,
                )
            )

    # -- retrieval threads ------------------------------------------------------------------
    def _retrieval_thread(self, run_id: int, n: int = 0) -> None:
        journal = Journal.open(self.journal.path)
        try:
            # The others start once the first has reached both PACS: a misconfigured or
            # refusing peer then sees one association attempt and the run one clean error,
            # not a burst of them.
            while n and not self._first_contact.wait(0.2):
                if self.stop.is_set() or self._error is not None:
                    return
            while not self.stop.is_set() and self._error is None:
                try:
                    action = self._todo.get_nowait()
                except queue.Empty:
                    break
                if not self._wait_for_window():
                    break
                try:
                    self._study(journal, run_id, action)
                except _Stop:
                    break
                finally:
                    self._first_contact.set()
        except BaseException as exc:  # handed to the main thread, which raises it
            with self._lock:
                if self._error is None:
                    self._error = exc
                    self._error_at = time.monotonic()
            self.stop.set()
        finally:
            self._first_contact.set()
            journal.close()
            with self._lock:
                self._threads_done += 1

    @contextlib.contextmanager
    def _retrieval_slot(self) -> Iterator[None]:
        """One of the `source.parallel` retrievals, inside the schedule's window."""
        while not self._retrieving.acquire(timeout=0.2):
            if self.stop.is_set():
                raise _Stop
        try:
            # The window may have closed while this study was being prepared.
            if not self._wait_for_window():
                raise _Stop
            yield
        finally:
            self._retrieving.release()

    def _wait_for_window(self) -> bool:
        gate = self._gate
        if gate is None:
            return True
        until = gate.waiting_until() if hasattr(gate, "waiting_until") else None
        if until is not None:
            self._report(waiting=f"outside the schedule; resuming at {until:%Y-%m-%d %H:%M}")
        return bool(gate.wait_for_window(self.stop))

    def _study(self, journal: Journal, run_id: int, action: StudyAction) -> None:
        uid = action.study_uid
        assert self._source is not None
        # SOP classes are needed only to offer C-GET storage contexts; a C-MOVE or direct
        # study is found faster without them (verification asks for them itself).
        src = self.spec.source
        with_class = (
            isinstance(src, DimseSource) and src.retrieve == "c-get" and action.route != "direct"
        )
        instances = self._source.instances(uid, with_class=with_class)
        refusal = _source_changed(action, instances)
        if refusal:
            self._refuse(journal, run_id, action, "source_changed", refusal)
            return
        clash = journal.claimed_by_other_studies(uid, [i.sop_uid for i in instances])
        if clash:
            # The same SOP Instance UID in two studies is two different objects or one filed
            # twice; either way sending it would overwrite or merge: a person decides.
            others = sorted(set(clash.values()))
            self._refuse(
                journal,
                run_id,
                action,
                "sop_uid_conflict",
                f"{len(clash)} SOP Instance UIDs also belong to study {', '.join(others[:3])}",
            )
            return
        journal.plan_instances(
            run_id, uid, [(i.sop_uid, i.series_uid, i.sop_class_uid) for i in instances]
        )
        present = self._destination_holdings(uid, probe=True)
        self._first_contact.set()
        # Instances the destination lists but did not commit to keep must go again.
        resend: set[str] = set(getattr(journal, "needs_resend", lambda _u: set())(uid))
        states = {r.sop_uid: r.state for r in journal.instances(uid)}
        already = [i.sop_uid for i in instances if i.sop_uid in present and i.sop_uid not in resend]
        newly_present = [s for s in already if states.get(s) != SENT]
        journal.set_instances(run_id, newly_present, PRESENT, "already_at_destination")
        missing = [i for i in instances if i.sop_uid not in present or i.sop_uid in resend]
        with self._lock:
            self._result.present += len(newly_present)
            self._instances_done += len(already)
        state = _Study(action=action)
        with self._lock:
            self._studies[uid] = state
        if missing and action.route == "direct":
            missing = self._direct(journal, run_id, state, instances, missing)
        if missing:
            state.found = None  # relayed instances: the verifier asks the destination itself
            self._relay(journal, run_id, state, instances, missing)
        self._fetch_done(journal, run_id, state)

    def _refuse(
        self, journal: Journal, run_id: int, action: StudyAction, reason: str, detail: str
    ) -> None:
        journal.set_study(run_id, action.study_uid, "refused", reason, detail)
        with self._lock:
            self._result.studies_refused += 1
            self._result.refusal_reasons[reason] += 1
            self._instances_done += action.instance_count
            self._studies_done += 1
        self._report()

    def _destination_holdings(self, study_uid: str, *, probe: bool = False) -> set[str]:
        return {i.sop_uid for i in self._destination_records(study_uid, probe=probe)}

    def _destination_records(self, study_uid: str, *, probe: bool = False) -> list[InstanceRecord]:
        """The instances (UIDs and series) the destination holds of a study, retried like a C-STORE would be. the destination holds of a study, retried like a C-STORE would be.

        With probe, a study-level count comes first: a study the destination does not hold
        at all (most of a migration) then costs one answer, not one per instance. A
        destination that is restarting or briefly refuses associations gets the same bounded
        backoff as sending; a permanent rejection stops the run at once.
        """
        for attempt in range(MAX_ATTEMPTS):
            try:
                with open_find(self.calling, self.destination) as finder:
                    if probe and finder.study_instance_count(study_uid) == 0:
                        return []
                    return finder.study_instances(study_uid, with_class=False)
            except AssociationRejected as exc:
                if not exc.transient or attempt == MAX_ATTEMPTS - 1:
                    raise
                log.info("destination busy (%s); retrying", exc)
            except PacsError as exc:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                log.info("destination query failed (%s); retrying", exc)
            time.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover

    # -- direct route -------------------------------------------------------------------------
    def _direct(
        self,
        journal: Journal,
        run_id: int,
        state: _Study,
        instances: list[InstanceRecord],
        missing: list[InstanceRecord],
    ) -> list[InstanceRecord]:
        """Move from the source straight to the destination; return what did not arrive.

        Arrival is judged by the destination's own instance-level answer, never by the
        source's sub-operation counts. What still lacks after a second, instance-level move
        goes by relay (the destination may refuse a syntax the source will not convert).
        """
        action = state.action
        source = self._source
        move_ae = self.spec.destination.move_ae
        assert isinstance(source, DimseAccess) and move_ae
        uid = action.study_uid
        capped = self._gate is not None and any(
            w.max_instances_per_second or w.max_mb_per_second for w in self.spec.schedule.windows
        )
        arrived: set[str] = set()
        todo = missing
        completed = 0
        for round_ in range(2):
            if round_ == 0 and len(todo) == len(instances) and not capped:
                requests = [RetrieveRequest(study_uid=uid)]
            else:
                requests = image_requests(uid, todo)
            with self._retrieval_slot():
                for request in requests:
                    if self.stop.is_set():
                        raise _Stop
                    if capped:
                        self._gate.throttle(
                            len(request.sop_uids) or len(todo), 0, self.stop, hold_outside=False
                        )
                    moved = source.move_to(request, move_ae)
                    completed += moved.completed
                    if moved.status not in (0x0000, None):
                        log.info("direct move: %s", moved.describe())
            arrived = self._confirm_arrival(
                state, {i.sop_uid for i in missing}, patient=completed > 0
            )
            if (
                not arrived
                and completed == 0
                and moved.status is not None
                and moved.status not in (0x0000, 0xB000)
                and not 0xA700 <= moved.status <= 0xA7FF  # out of resources: relay instead
            ):
                # The source moved nothing anywhere: a configuration fault (it does not know
                # move_ae, or may not send there), not a study to relay around silently.
                raise PacsError(
                    f"{source.peer.describe()} moved nothing to {move_ae!r} "
                    f"(destination.move_ae): {moved.describe()}; check that the source knows "
                    "that AE title with the destination's host and port, or remove move_ae to "
                    "relay"
                )
            todo = [i for i in missing if i.sop_uid not in arrived]
            if not todo:
                break
        for inst in missing:
            if inst.sop_uid in arrived:
                journal.set_instance(run_id, inst.sop_uid, SENT, detail="direct", attempt=True)
        with self._lock:
            self._result.sent += len(arrived)
            self._result.sent_direct += len(arrived)
            self._instances_done += len(arrived)
        self._report()
        if todo:
            log.info("%d instances did not arrive by the direct route; relaying them", len(todo))
        return todo

    def _confirm_arrival(self, state: _Study, wanted: set[str], *, patient: bool) -> set[str]:
        """What the destination lists; with patient, re-asks briefly for late indexing.

        The answer is kept for live verification (it is the destination's own instance-level
        answer after the move), which then need not ask again.
        """
        held: set[str] = set()
        for attempt in range(DIRECT_CONFIRM_TRIES if patient else 1):
            records = self._destination_records(state.action.study_uid)
            state.found = records
            held = {i.sop_uid for i in records} & wanted
            if held == wanted:
                break
            time.sleep(0.5 * (attempt + 1))
        return held

    # -- relay route ----------------------------------------------------------------------------
    def _relay(
        self,
        journal: Journal,
        run_id: int,
        state: _Study,
        instances: list[InstanceRecord],
        missing: list[InstanceRecord],
    ) -> None:
        uid = state.action.study_uid
        assert self._source is not None
        spool = StudySpool(
            self.spool_root,
            uid,
            {i.sop_uid for i in missing},
            on_received=lambda item: self._enqueue(state, item),
        )
        state.spool = spool
        with self._retrieval_slot():
            retrieved = self._source.fetch(uid, instances, missing, spool)
            short = [i for i in missing if i.sop_uid not in spool.received]
            if short and len(short) < len(missing) and not self.stop.is_set():
                # Judged by what arrived, not by the peer's counts (a C-MOVE may report
                # success and lose sub-operations): ask once more for exactly what is missing.
                log.info("%d instances did not arrive; asking again for those", len(short))
                retrieved = self._source.fetch(uid, instances, short, spool)
        if self.stop.is_set():
            raise _Stop
        for inst in missing:
            if inst.sop_uid not in spool.received:
                self._fail(journal, run_id, state, inst.sop_uid, None, "not_retrieved", retrieved)

    def _enqueue(self, state: _Study, item: SpooledInstance) -> None:
        """Hand one received instance to the senders (blocks while their queue is full)."""
        pool = self._pool
        assert pool is not None  # started before any retrieval thread
        if self._gate is not None:
            self._gate.throttle(1, item.size, self.stop, hold_outside=False)
        with self._lock:
            if item.sop_uid in state.queued:
                return
            state.queued.add(item.sop_uid)
            state.pending += 1
            self._job_ids += 1
            job_id = self._job_ids
        job = SendJob(
            job_id=job_id,
            study_uid=state.action.study_uid,
            sop_uid=item.sop_uid,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax=item.transfer_syntax,
            path=str(item.path),
            size=item.size,
            corrections=state.action.corrections,
            modified_at=self._modified_at,
        )
        if not pool.submit(job, self.stop):
            with self._lock:
                state.pending -= 1
                state.queued.discard(item.sop_uid)

    def _fetch_done(self, journal: Journal, run_id: int, state: _Study) -> None:
        with self._lock:
            state.fetch_done = True
            close = state.pending == 0 and not state.closed
            state.closed = state.closed or close
        if close:
            self._close_study(journal, run_id, state)

    # -- outcomes (main thread) ---------------------------------------------------------------
    def _on_result(self, run_id: int, r: SendResult) -> None:
        state = self._studies[r.study_uid]
        if r.fatal:
            self.stop.set()
            raise AssociationRejected(r.fatal)
        outcome = r.outcome
        if outcome is not None and outcome.stored and not r.breaker:
            detail = outcome.describe() if outcome.category == "warning" else ""
            sent_as = getattr(outcome, "sent_syntax", "")
            if state.spool is not None and sent_as:
                item = state.spool.received.get(r.sop_uid)
                if item is not None and item.transfer_syntax != sent_as:
                    detail = " ".join(
                        x for x in (detail, f"transcoded {item.transfer_syntax} -> {sent_as}") if x
                    )
            self.journal.set_instance(
                run_id, r.sop_uid, SENT, code=outcome.code, detail=detail, attempt=True
            )
            with self._lock:
                self._result.sent += 1
                self._result.bytes_sent += r.size
        elif outcome is None or r.breaker:
            self._fail(
                self.journal, run_id, state, r.sop_uid, None, "destination_unavailable", r.problem
            )
        else:
            reason = r.reason or _failure_reason(outcome)
            self._fail(
                self.journal, run_id, state, r.sop_uid, outcome.code, reason, outcome.describe()
            )
        if state.spool is not None:
            state.spool.discard(r.sop_uid)
        with self._lock:
            state.pending -= 1
            self._instances_done += 1
            close = state.fetch_done and state.pending == 0 and not state.closed
            state.closed = state.closed or close
        if r.breaker:
            self.stop.set()
            raise DestinationUnavailable(
                f"{self.destination.describe()} failed {r.failures_in_a_row} times in a row "
                f"(last: {' '.join(r.problem.split())}); apply stopped, the "
                f"{self._result.sent} instances sent in this run are kept in the journal: run "
                "apply again once the destination is back"
            )
        if close:
            self._close_study(self.journal, run_id, state, defer=True)
        self._report()

    def _fail(
        self,
        journal: Journal,
        run_id: int,
        state: _Study,
        sop_uid: str,
        code: int | None,
        reason: str,
        detail: str,
    ) -> None:
        journal.set_instance(
            run_id, sop_uid, FAILED, code=code, reason=reason, detail=detail, attempt=True
        )
        with self._lock:
            state.failed += 1
            self._result.failed += 1
            self._result.failure_reasons[reason] += 1

    def _submit_closed(self) -> None:
        with self._lock:
            closed, self._closed_unsubmitted = self._closed_unsubmitted, []
        if self._verifier is not None:
            for uid, found in closed:
                self._verifier.submit(uid, found=found)

    def _close_study(
        self, journal: Journal, run_id: int, state: _Study, *, defer: bool = False
    ) -> None:
        """defer: the caller is inside a journal batch and submits to verification after
        its commit (the verifier reads the journal from another connection)."""
        uid = state.action.study_uid
        if state.failed:
            journal.set_study(
                run_id, uid, "incomplete", "instances_failed", f"{state.failed} failed"
            )
        else:
            journal.set_study(run_id, uid, "transferred")
        if state.spool is not None:
            state.spool.cleanup()
        with self._lock:
            if state.failed:
                self._result.studies_incomplete += 1
            else:
                self._result.studies_complete += 1
            self._studies_done += 1
            self._studies.pop(uid, None)
        if defer:
            with self._lock:
                self._closed_unsubmitted.append((uid, state.found))
        elif self._verifier is not None:
            self._verifier.submit(uid, found=state.found)
        self._report()


def _gate_for(spec: Spec) -> Any:
    """The schedule's gate, or None when the spec sets no schedule."""
    if not spec.schedule.windows:
        return None
    from pacsmig.apply.schedule import Gate

    return Gate(spec.schedule)


def _source_changed(action: StudyAction, instances: list[InstanceRecord]) -> str:
    counts = Counter(i.series_uid for i in instances)
    expected = {s.series_uid: s.instances for s in action.series}
    if dict(counts) == expected:
        return ""
    if not instances:
        return "the study is no longer at the source"
    return (
        f"the source now holds {len(instances)} instances in {len(counts)} series; the plan "
        f"expected {action.instance_count} in {action.series_count}: re-plan"
    )


def _failure_reason(outcome: StoreOutcome) -> str:
    """A stable snake_case reason for a store that did not succeed (codes: PS3.4 B.2.3)."""
    if outcome.comment.startswith("unsupported_by_destination"):
        return "unsupported_by_destination"
    if outcome.comment.startswith("transcode_failed"):
        return "transcode_failed"
    if outcome.category == "in_doubt":
        return "no_response"
    code = outcome.code
    if code is None:
        return "rejected"
    if 0xA700 <= code <= 0xA7FF or code == 0x0213:
        return "out_of_resources"
    if 0xA900 <= code <= 0xA9FF:
        return "data_set_mismatch"
    if code == 0x0122:
        return "sop_class_not_supported"
    if code == 0x0124:
        return "not_authorised"
    if 0xC000 <= code <= 0xCFFF:
        return "cannot_understand"
    return "rejected"


__all__ = ["ApplyResult", "DimseSource", "Executor", "Progress", "ProgressEvent"]
