"""Live verification: studies are verified while apply moves the next ones.

The executor calls `submit(study_uid)` when a study's transfer ends. A worker thread verifies
it at the spec's levels (its own journal connection: SQLite in WAL mode takes one writer at a
time and readers alongside) and records the result under the apply run. Storage commitment is
batched across studies by a second thread: one N-ACTION per BATCH_INSTANCES references, or
whatever is waiting once no study has completed for `batch_wait` seconds.

    with LiveVerifier(plan, journal_path, index_path=index, run_id=run_id) as live:
        ...  # per study: live.submit(study_uid)
        summary = live.close(timeout=600)

A C-MOVE source delivers its instances to the Storage SCP apply runs on local.port; pass that
apply's SourceAccess as `source` (fetches are thread-safe) or the images level is left to
`pacsmig verify`. Storage commitment reports on a separate association arrive at local.port:
the verifier listens there itself unless the source is C-MOVE (apply's SCP holds the port, and
must then admit the destination's reports: StorageSCP(commitment_from=[its AE title])).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pacsmig.apply.sources import SourceAccess, open_source
from pacsmig.dicomnet.find import open_find
from pacsmig.errors import PacsmigError
from pacsmig.inventory.dimse import peer_of
from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import Journal
from pacsmig.plan.model import Plan
from pacsmig.spec.load import spec_of_plan
from pacsmig.spec.model import DimseSource
from pacsmig.verify.commitment import (
    BATCH_INSTANCES,
    CommitRequest,
    commit_batch,
    commitment_listener,
    items_for,
)
from pacsmig.verify.counts import ERROR, NOT_FOUND, VERIFIED, StudyCheck, _SourceLookup
from pacsmig.verify.levels import (
    StudyVerifier,
    error_check,
    options_for,
    record,
    with_commitment,
)

log = logging.getLogger(__name__)

BATCH_WAIT = 2.0
ABORT_WAIT = 5.0  # seconds close() waits for the study in hand after an error


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSummary:
    submitted: int
    finished: int
    statuses: dict[str, int]  # status -> studies, for the finished ones
    pending: int  # submitted, not finished when close() returned

    @property
    def verified(self) -> int:
        return self.statuses.get(VERIFIED, 0)

    @property
    def ok(self) -> bool:
        return self.pending == 0 and self.verified == self.finished


class LiveVerifier:
    def __init__(
        self,
        plan: Plan,
        journal_path: Path,
        *,
        index_path: Path | None,
        run_id: int,
        levels: Sequence[str] | None = None,
        image_sample: float | int | None = None,
        source: SourceAccess | None = None,
        listen: bool | None = None,
        batch_instances: int = BATCH_INSTANCES,
        batch_wait: float = BATCH_WAIT,
    ) -> None:
        self.plan = plan
        self.journal_path = Path(journal_path)
        self.index_path = index_path
        self.run_id = run_id
        self.spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
        self.options = options_for(self.spec, levels, image_sample)
        self._destination = peer_of(self.spec.destination, "destination")
        self._source = source
        if listen is None:
            # A C-MOVE source's Storage SCP (apply's) holds local.port: it takes the reports.
            src = self.spec.source
            listen = not (isinstance(src, DimseSource) and src.retrieve == "c-move")
        self._listen = listen and self.options.has("commitment")
        self._abort = threading.Event()
        self._batch_instances = batch_instances
        self._batch_wait = batch_wait
        self._studies: queue.Queue[str | None] = queue.Queue()
        self._commits: queue.Queue[tuple[StudyCheck, CommitRequest] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._submitted: list[str] = []
        self._found: dict[str, list[InstanceRecord]] = {}
        self._finished: dict[str, StudyCheck] = {}
        self._stack = contextlib.ExitStack()
        self._threads: list[threading.Thread] = []
        self._listener_note = ""
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> LiveVerifier:
        if self._listen:
            self._listener_note = self._stack.enter_context(commitment_listener(self.spec))
        worker = threading.Thread(target=self._work, name="pacsmig-verify", daemon=True)
        self._threads.append(worker)
        if self.options.has("commitment"):
            committer = threading.Thread(target=self._commit, name="pacsmig-commit", daemon=True)
            self._threads.append(committer)
        for t in self._threads:
            t.start()
        return self

    def __enter__(self) -> LiveVerifier:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # After an error or Ctrl-C, what is queued stays unverified (pacsmig verify does it).
        self.close(None if exc_type is None else ABORT_WAIT, drain=exc_type is None)

    def submit(self, study_uid: str, found: Sequence[InstanceRecord] | None = None) -> None:
        """Verify this study in the background (call when its transfer has ended).

        `found`: what an instance-level query of the destination answered after the
        transfer ended (the direct route's confirmation); the instances level then uses it
        instead of asking the destination the same question again.
        """
        if self._closed:
            raise RuntimeError("LiveVerifier is closed")
        with self._lock:
            self._submitted.append(study_uid)
            if found is not None:
                self._found[study_uid] = list(found)
        self._studies.put(study_uid)

    def close(self, timeout: float | None = None, *, drain: bool = True) -> LiveSummary:
        """Finish what was submitted (at most `timeout` seconds) and summarise.

        With drain=False the studies not yet started are left unverified.
        """
        if not self._closed:
            self._closed = True
            if not drain:
                self._abort.set()
            self._studies.put(None)
            deadline = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self._stack.close()
        return self.summary()

    def summary(self) -> LiveSummary:
        with self._lock:
            finished = dict(self._finished)
            submitted = len(set(self._submitted))
        return LiveSummary(
            submitted=submitted,
            finished=len(finished),
            statuses=dict(Counter(c.status for c in finished.values())),
            pending=submitted - len(finished),
        )

    def results(self) -> dict[str, StudyCheck]:
        with self._lock:
            return dict(self._finished)

    # -- threads --------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                journal = stack.enter_context(Journal.open(self.journal_path))
                lookup = _SourceLookup(self.plan, self.index_path)
                stack.callback(lookup.close)
                source = self._images_source(stack)
                # Its own folder: an on-demand verify may run meanwhile and clears its own.
                name = self.journal_path.name + ".live-verify-spool"
                spool_root = self.journal_path.with_name(name)
                stack.callback(shutil.rmtree, spool_root, True)
                verifier = StudyVerifier(
                    self.plan,
                    self.spec,
                    self.options,
                    journal,
                    source=source,
                    lookup=lookup,
                    spool_root=spool_root,
                )
                while (study_uid := self._studies.get()) is not None:
                    if self._abort.is_set():
                        break
                    self._verify_one(verifier, journal, study_uid)
        except Exception:  # the apply must go on; what is unverified shows as pending
            log.exception("live verification stopped")
        finally:
            self._commits.put(None)

    def _images_source(self, stack: contextlib.ExitStack) -> SourceAccess | None:
        if not self.options.has("images"):
            return None
        if self._source is not None:
            return self._source
        src = self.spec.source
        if isinstance(src, DimseSource) and src.retrieve == "c-move":
            # apply's Storage SCP holds local.port: without its SourceAccess, no source copy.
            return None
        return stack.enter_context(open_source(self.spec, self.index_path))

    def _verify_one(self, verifier: StudyVerifier, journal: Journal, study_uid: str) -> None:
        action = self.plan.study(study_uid)
        if action is None:
            log.warning("live verification: a study that is not in the plan was submitted")
            return
        levels = [x for x in self.options.levels if x != "commitment"]
        with self._lock:
            hint = self._found.pop(study_uid, None)
        try:
            with open_find(self.spec.local.ae_title, verifier.destination) as dest:
                check, expected, found = verifier.verify(action, dest, found=hint)
        except PacsmigError as exc:
            check, expected, found = error_check(action, levels, str(exc)), [], []
        record(journal, self.run_id, check)
        if self.options.has("commitment") and check.status not in (NOT_FOUND, ERROR):
            request = CommitRequest(study_uid=study_uid, items=items_for(expected, found))
            self._commits.put((check, request))
        else:
            with self._lock:
                self._finished[study_uid] = check

    def _commit(self) -> None:
        pending: list[tuple[StudyCheck, CommitRequest]] = []
        try:
            with Journal.open(self.journal_path) as journal:
                while True:
                    try:
                        item = self._commits.get(timeout=self._batch_wait if pending else None)
                    except queue.Empty:
                        self._flush(journal, pending)
                        pending = []
                        continue
                    if item is None:
                        if not self._abort.is_set():
                            self._flush(journal, pending)
                        return
                    pending.append(item)
                    if sum(len(r.items) for _, r in pending) >= self._batch_instances:
                        self._flush(journal, pending)
                        pending = []
        except Exception:
            log.exception("live storage commitment stopped")

    def _flush(self, journal: Journal, pending: list[tuple[StudyCheck, CommitRequest]]) -> None:
        if not pending:
            return
        answers = commit_batch(
            self.spec.local.ae_title,
            self._destination,
            [r for _, r in pending],
            timeout=self.options.commitment_timeout,
            note=self._listener_note,
        )
        for check, request in pending:
            merged = with_commitment(check, answers[request.study_uid])
            record(journal, self.run_id, merged)
            with self._lock:
                self._finished[request.study_uid] = merged


class LiveVerifierProcess:
    """A LiveVerifier in a process of its own, with the same interface.

    Verification is mostly C-FIND answers decoded by pydicom, about half a millisecond of CPU
    per instance and level; in apply's process that competes with receiving for the GIL.
    Used when the levels need nothing of apply's own process (its Storage SCP takes the
    C-MOVE copies the images level compares, and the commitment reports sent to local.port).
    """

    def __init__(self, plan: Plan, journal_path: Path, *, index_path: Path | None, run_id: int):
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx: Any = mp.get_context(method)
        self._studies: Any = ctx.Queue()
        self._summary: Any = ctx.Queue()
        self._process = ctx.Process(
            target=_verify_in_process,
            args=(plan, Path(journal_path), index_path, run_id, self._studies, self._summary),
            kwargs={"parent_pid": os.getpid()},
            name="pacsmig-verify",
            daemon=True,
        )
        self._closed = False
        self._last = LiveSummary(submitted=0, finished=0, statuses={}, pending=0)
        self._submitted = 0

    def __enter__(self) -> LiveVerifierProcess:
        self._process.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(None if exc_type is None else ABORT_WAIT, drain=exc_type is None)

    def submit(self, study_uid: str, found: Sequence[InstanceRecord] | None = None) -> None:
        if self._closed:
            raise RuntimeError("LiveVerifier is closed")
        self._submitted += 1
        self._studies.put((study_uid, None if found is None else list(found)))

    def close(self, timeout: float | None = None, *, drain: bool = True) -> LiveSummary:
        if self._closed:
            return self._last
        self._closed = True
        if not drain:
            self._process.terminate()
            self._process.join(5)
            self._last = LiveSummary(
                submitted=self._submitted, finished=0, statuses={}, pending=self._submitted
            )
            return self._last
        self._studies.put(None)
        try:
            self._last = self._summary.get(timeout=timeout)
        except queue.Empty:
            self._process.terminate()
            self._last = LiveSummary(
                submitted=self._submitted, finished=0, statuses={}, pending=self._submitted
            )
        self._process.join(5)
        return self._last


def _verify_in_process(
    plan: Plan,
    journal_path: Path,
    index_path: Path | None,
    run_id: int,
    studies: Any,
    summary: Any,
    *,
    parent_pid: int,
) -> None:
    import signal

    # The parent decides when this ends (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with LiveVerifier(plan, journal_path, index_path=index_path, run_id=run_id) as live:
        while True:
            try:
                uid = studies.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent died: nobody reads what we would write
                continue
            if uid is None:
                summary.put(live.close())
                return
            live.submit(*uid)


def needs_apply_process(plan: Plan) -> bool:
    """Whether live verification must share apply's process (its SCP on local.port)."""
    spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
    src = spec.source
    levels = options_for(spec, None, None)
    return (
        isinstance(src, DimseSource)
        and src.retrieve == "c-move"
        and (levels.has("images") or levels.has("commitment"))
    )
