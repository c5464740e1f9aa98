"""Walk an approved plan: per study, preflight, retrieve, send, record every outcome.

Apply executes the plan; it does not re-decide it. A study whose source holdings changed
since planning is refused with a reason. What is already at the destination is not sent
again, so apply is idempotent and resumes after a crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pacsmig.apply.sources import SourceAccess, open_source
from pacsmig.apply.spool import SpooledInstance, StudySpool
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.find import open_find
from pacsmig.dicomnet.status import StoreOutcome
from pacsmig.dicomnet.store import DestinationUnavailable, StoreSession, open_store
from pacsmig.errors import AssociationRejected, NoAcceptedContexts, PacsError, PacsmigError
from pacsmig.inventory.dimse import peer_of
from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import Plan, StudyAction
from pacsmig.spec.load import spec_of_plan
from pacsmig.spec.model import Spec

log = logging.getLogger(__name__)

# Attempts per instance while the destination answers "out of resources", does not answer,
# or cannot be associated with. Permanent failures are never retried unchanged.
MAX_ATTEMPTS = 4
# Wait before the n-th attempt after n transient failures in a row (the last value repeats);
# tests patch these to run fast.
BACKOFF_SECONDS: tuple[float, ...] = (0.5, 2.0, 5.0)
# Circuit breaker: this many transient failures in a row, across instances and studies,
# stop the run (DestinationUnavailable); what was sent stays journaled.
BREAKER_THRESHOLD = 10
IMAGE_LEVEL_BATCH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    studies_done: int
    studies_total: int
    instances_done: int
    instances_total: int
    bytes_sent: int


Progress = Callable[[ProgressEvent], None]


@dataclass(slots=True, kw_only=True)
class ApplyResult:
    run_id: int
    studies_total: int = 0
    studies_complete: int = 0
    studies_incomplete: int = 0
    studies_refused: int = 0
    sent: int = 0
    present: int = 0
    failed: int = 0
    bytes_sent: int = 0
    interrupted: bool = False
    failure_reasons: Counter[str] = field(default_factory=Counter)
    refusal_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (
            self.failed or self.studies_incomplete or self.studies_refused or self.interrupted
        )


class _Sender:
    """A destination association opened lazily and re-opened after it is lost.

    One lives for the whole run: `failures_in_a_row` counts transient failures across
    instances and studies, for the backoff and the circuit breaker.
    """

    def __init__(self, calling: str, peer: Peer) -> None:
        self._calling = calling
        self.peer = peer
        self._pairs: set[tuple[str, str]] = set()
        self._stack = contextlib.ExitStack()
        self._session: StoreSession | None = None
        self.failures_in_a_row = 0

    def use(self, pairs: set[tuple[str, str]]) -> None:
        """The (SOP class, transfer syntax) pairs the next association must carry."""
        if pairs != self._pairs:
            self.close()
            self._pairs = set(pairs)

    def session(self) -> StoreSession:
        if self._session is None or not self._session.is_established:
            self.close()
            self._session = self._stack.enter_context(
                open_store(self._calling, self.peer, self._pairs)
            )
        return self._session

    def answered(self) -> None:
        self.failures_in_a_row = 0

    def failed(self) -> None:
        self.failures_in_a_row += 1

    def backoff(self) -> float:
        if not self.failures_in_a_row or not BACKOFF_SECONDS:
            return 0.0
        return BACKOFF_SECONDS[min(self.failures_in_a_row, len(BACKOFF_SECONDS)) - 1]

    def close(self) -> None:
        self._session = None
        self._stack.close()
        self._stack = contextlib.ExitStack()


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
    ) -> None:
        self.plan = plan
        self.spec: Spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
        self.journal = journal
        self.spool_root = spool_root
        self.approval = approval
        self.progress = progress
        self.stop = stop or threading.Event()
        self.index_path = index_path
        self._source: SourceAccess | None = None
        self.destination = peer_of(self.spec.destination, "destination")
        self.calling = self.spec.local.ae_title
        self._studies_total = 0
        self._instances_total = 0
        self._studies_done = 0
        self._instances_done = 0

    # -- run ----------------------------------------------------------------------------
    def run(self) -> ApplyResult:
        todo = self.plan.by_action("migrate")
        run_id = self.journal.start_run("apply", fingerprint(self.plan), self.approval)
        result = ApplyResult(run_id=run_id, studies_total=len(todo))
        self._studies_total = len(todo)
        self._instances_total = sum(a.instance_count for a in todo)
        outcome = "failed"
        try:
            with open_source(self.spec, self.index_path) as source:
                self._source = source
                for action in todo:
                    if self.stop.is_set():
                        result.interrupted = True
                        break
                    self._study(run_id, action, result)
                    self._studies_done += 1
                    self._report(result)
            outcome = "interrupted" if result.interrupted else ("ok" if result.ok else "partial")
        except KeyboardInterrupt:
            result.interrupted = True
            outcome = "interrupted"
            raise
        finally:
            self.journal.finish_run(run_id, outcome)
        return result

    def _report(self, result: ApplyResult) -> None:
        if self.progress is not None:
            self.progress(
                ProgressEvent(
                    studies_done=self._studies_done,
                    studies_total=self._studies_total,
                    instances_done=self._instances_done,
                    instances_total=self._instances_total,
                    bytes_sent=result.bytes_sent,
                )
            )

    # -- one study ------------------------------------------------------------------------
    def _study(self, run_id: int, action: StudyAction, result: ApplyResult) -> None:
        uid = action.study_uid
        assert self._source is not None
        instances = self._source.instances(uid)
        refusal = self._source_changed(action, instances)
        if refusal:
            self.journal.set_study(run_id, uid, "refused", "source_changed", refusal)
            result.studies_refused += 1
            result.refusal_reasons["source_changed"] += 1
            self._instances_done += action.instance_count
            return
        clash = self.journal.claimed_by_other_studies(uid, [i.sop_uid for i in instances])
        if clash:
            # The same SOP Instance UID in two studies is two different objects or one filed
            # twice; either way sending it would overwrite or merge: a person decides.
            others = sorted(set(clash.values()))
            self.journal.set_study(
                run_id,
                uid,
                "refused",
                "sop_uid_conflict",
                f"{len(clash)} SOP Instance UIDs also belong to study {', '.join(others[:3])}",
            )
            result.studies_refused += 1
            result.refusal_reasons["sop_uid_conflict"] += 1
            self._instances_done += action.instance_count
            return
        self.journal.plan_instances(
            run_id, uid, [(i.sop_uid, i.series_uid, i.sop_class_uid) for i in instances]
        )
        present = self._destination_holdings(uid)
        already = [i.sop_uid for i in instances if i.sop_uid in present]
        states = {r.sop_uid: r.state for r in self.journal.instances(uid)}
        self.journal.set_instances(
            run_id, [s for s in already if states.get(s) != SENT], PRESENT, "already_at_destination"
        )
        result.present += sum(1 for s in already if states.get(s) != SENT)
        self._instances_done += len(already)
        missing = [i for i in instances if i.sop_uid not in present]
        if not missing:
            self.journal.set_study(run_id, uid, "transferred")
            result.studies_complete += 1
            return
        failed_before = result.failed
        spool = StudySpool(self.spool_root, uid, {i.sop_uid for i in missing})
        try:
            retrieved = self._source.fetch(uid, instances, missing, spool)
            short = [i for i in missing if i.sop_uid not in spool.received]
            if short and len(short) < len(missing):
                # Judged by what arrived, not by the peer's counts (a C-MOVE may report success
                # and lose sub-operations): ask once more for exactly what is missing.
                log.info("%d instances did not arrive; asking again for those", len(short))
                retrieved = self._source.fetch(uid, instances, short, spool)
            for inst in missing:
                if inst.sop_uid not in spool.received:
                    self._fail(run_id, inst.sop_uid, None, "not_retrieved", retrieved, result)
            todo = [i for i in missing if i.sop_uid in spool.received]
            if action.corrections:
                todo = self._correct(run_id, action, spool, todo, result)
            self._send_all(run_id, spool, todo, result)
        finally:
            spool.cleanup()
        if result.failed > failed_before:
            self.journal.set_study(
                run_id,
                uid,
                "incomplete",
                "instances_failed",
                f"{result.failed - failed_before} failed",
            )
            result.studies_incomplete += 1
        else:
            self.journal.set_study(run_id, uid, "transferred")
            result.studies_complete += 1

    def _destination_holdings(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the destination holds of a study, retried like a C-STORE would be.

        A destination that is restarting or briefly refuses associations gets the same
        bounded backoff as sending; a permanent rejection stops the run at once.
        """
        for attempt in range(MAX_ATTEMPTS):
            try:
                with open_find(self.calling, self.destination) as finder:
                    return {i.sop_uid for i in finder.study_instances(study_uid)}
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

    @staticmethod
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

    # -- processing ---------------------------------------------------------------------
    def _correct(
        self,
        run_id: int,
        action: StudyAction,
        spool: StudySpool,
        todo: list[InstanceRecord],
        result: ApplyResult,
    ) -> list[InstanceRecord]:
        """Rewrite the planned attributes in each spooled instance; return those that can go."""
        from pacsmig.apply.process import apply_corrections

        modified_at = dt.datetime.now(dt.UTC)
        ready = []
        for inst in todo:
            item = spool.received[inst.sop_uid]
            try:
                data = apply_corrections(
                    item.path.read_bytes(), action.corrections, modified_at=modified_at
                )
            except (PacsmigError, ValueError, OSError) as exc:
                self._fail(run_id, inst.sop_uid, None, "correction_failed", str(exc), result)
                continue
            spool.replace(inst.sop_uid, data)
            ready.append(inst)
        return ready

    # -- sending ------------------------------------------------------------------------
    def _send_all(
        self, run_id: int, spool: StudySpool, todo: list[InstanceRecord], result: ApplyResult
    ) -> None:
        items = [spool.received[i.sop_uid] for i in todo]
        if not items:
            return
        sender: _Sender | None = getattr(self, "_sender", None)
        if sender is None:
            # Kept on the executor, not per study, so the breaker sees a destination that
            # fails study after study.
            sender = self._sender = _Sender(self.calling, self.destination)
        sender.use({(i.sop_class_uid, i.transfer_syntax) for i in items})
        try:
            for item in items:
                self._send_one(run_id, sender, item, result)
                spool.discard(item.sop_uid)
                self._instances_done += 1
                self._report(result)
        finally:
            # An idle association would time out at the peer while the next study retrieves.
            sender.close()

    def _send_one(
        self, run_id: int, sender: _Sender, item: SpooledInstance, result: ApplyResult
    ) -> None:
        """Send until stored, failed for good, or out of attempts; journal the outcome.

        An instance is journaled as sent only on a success or warning status, so one that
        is confirmed is never sent again. A lost answer ("in doubt") is sent again on a fresh
        association: storing the same SOP Instance twice is harmless, missing it is not.
        """
        outcome: StoreOutcome | None = None
        problem = ""
        for attempt in range(MAX_ATTEMPTS):
            time.sleep(sender.backoff())
            try:
                outcome = sender.session().send_file(
                    item.path, item.sop_class_uid, item.transfer_syntax
                )
            except AssociationRejected as exc:
                if not exc.transient:
                    raise  # configuration (AE titles): retrying cannot help, stop the run
                outcome, problem = None, str(exc)
            except NoAcceptedContexts as exc:
                # The destination takes no object of this kind in any syntax we can offer:
                # a fact about the instance, not a fault of the destination.
                sender.close()
                outcome = StoreOutcome(
                    category="failure", code=None, comment=f"unsupported_by_destination: {exc}"
                )
                break
            except PacsError as exc:  # unreachable, or it dropped the association request
                outcome, problem = None, str(exc)
            else:
                if outcome.stored or not outcome.transient:
                    sender.answered()
                    break
                problem = outcome.describe()
                # A fresh association for the next attempt: a lost answer leaves this one
                # unusable, and some PACSes free resources only when an association ends.
                sender.close()
            sender.failed()
            log.info("destination: %s; attempt %d of %d", problem, attempt + 1, MAX_ATTEMPTS)
            if sender.failures_in_a_row >= BREAKER_THRESHOLD:
                # The instance in hand says why the run stopped; later ones stay untouched.
                code = outcome.code if outcome is not None else None
                self._fail(run_id, item.sop_uid, code, "destination_unavailable", problem, result)
                raise DestinationUnavailable(
                    f"{sender.peer.describe()} failed {sender.failures_in_a_row} times in a row "
                    f"(last: {' '.join(problem.split())}); apply stopped, the {result.sent} "
                    "instances sent in this run are kept in the journal: run apply again once "
                    "the destination is back"
                )
        if outcome is not None and outcome.stored:
            detail = outcome.describe() if outcome.category == "warning" else ""
            self.journal.set_instance(
                run_id, item.sop_uid, SENT, code=outcome.code, detail=detail, attempt=True
            )
            result.sent += 1
            result.bytes_sent += item.size
            return
        if outcome is None:
            self._fail(run_id, item.sop_uid, None, "destination_unavailable", problem, result)
            return
        reason = _failure_reason(outcome)
        self._fail(run_id, item.sop_uid, outcome.code, reason, outcome.describe(), result)

    def _fail(
        self,
        run_id: int,
        sop_uid: str,
        code: int | None,
        reason: str,
        detail: str,
        result: ApplyResult,
    ) -> None:
        self.journal.set_instance(
            run_id, sop_uid, FAILED, code=code, reason=reason, detail=detail, attempt=True
        )
        result.failed += 1
        result.failure_reasons[reason] += 1


def _failure_reason(outcome: StoreOutcome) -> str:
    """A stable snake_case reason for a store that did not succeed (codes: PS3.4 B.2.3)."""
    if outcome.comment.startswith("unsupported_by_destination"):
        return "unsupported_by_destination"
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
