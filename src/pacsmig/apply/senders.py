"""C-STORE senders in worker processes: one association each, several at once.

pynetdicom spends ~5 ms of Python per C-STORE whatever the instance size, so in one process
the GIL caps a migration near 150-250 instances/s. Each worker here is a process with its own
association; the parent hands it spooled files through a bounded queue and journals the
outcomes it reports. Processing that needs the CPU (planned corrections, transcoding) runs
in the workers too, so it spreads over the cores.

Retries, backoff and the circuit breaker live in the worker (they concern its association),
with the breaker's count of transient failures in a row shared by all workers: a destination
that fails for everyone trips it once, not once per worker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from pacsmig.dicomnet.status import StoreOutcome
from pacsmig.errors import PacsmigError
from pacsmig.plan.model import Correction
from pacsmig.spec.model import Endpoint, LossyPolicy

log = logging.getLogger(__name__)

# A worker closes an association idle this long: the peer would time it out anyway, an
# association dropped by the peer costs a failed attempt to discover, and a PACS with an
# association limit gets the slot back for a worker that waits for one.
IDLE_CLOSE_SECONDS = 5.0
# Contexts kept proposed on one association before it is re-opened with only the new ones
# (an association carries at most 128 presentation contexts).
MAX_PAIRS = 40
# Jobs waiting per worker: enough to keep each association busy, few enough that the spool
# (one file per waiting job) stays small however large the migration.
QUEUE_PER_WORKER = 8
# How long a worker that could not associate (one of several) waits before trying again.
REQUEUE_PAUSE = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SendJob:
    job_id: int
    study_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    corrections: tuple[Correction, ...] = ()
    modified_at: str = ""  # ISO time of the run: every corrected instance of a run shares it


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    job_id: int
    study_uid: str
    sop_uid: str
    outcome: StoreOutcome | None  # None: no answer after every attempt (destination gone)
    problem: str = ""  # the last transient problem, when outcome is None or not stored
    reason: str = ""  # set for failures decided before sending (e.g. correction_failed)
    size: int = 0  # bytes of what was sent (after corrections)
    breaker: bool = False  # this worker saw the shared breaker trip
    fatal: str = ""  # a permanent association rejection: the run must stop
    failures_in_a_row: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderConfig:
    calling_ae_title: str
    destination: Endpoint
    associations: int = 1
    syntaxes: tuple[str, ...] = ()
    lossy: LossyPolicy | None = None
    max_attempts: int = 4
    backoff: tuple[float, ...] = (0.5, 2.0, 5.0)
    breaker_threshold: int = 10


class SenderPool:
    """Worker processes sending jobs; `submit` blocks while the queue is full (backpressure)."""

    def __init__(self, config: SenderConfig) -> None:
        self.config = config
        # fork where there is one: the worker starts in milliseconds with everything already
        # imported (spawn costs a second or more of imports per worker). The executor starts
        # the pool before its own threads, so no lock of theirs can be copied held.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx: Any = mp.get_context(method)
        self._jobs: Any = ctx.Queue(maxsize=max(1, config.associations) * QUEUE_PER_WORKER)
        self._results: Any = ctx.Queue()
        self._failures: Synchronized[int] = ctx.Value("i", 0)
        self._established: Synchronized[int] = ctx.Value("i", 0)
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(
                    config,
                    self._jobs,
                    self._results,
                    self._failures,
                    os.getpid(),
                    self._established,
                ),
                name=f"pacsmig-sender-{n}",
                daemon=True,
            )
            for n in range(max(1, config.associations))
        ]
        self._started = False

    def start(self) -> SenderPool:
        for p in self._procs:
            p.start()
        self._started = True
        return self

    def submit(self, job: SendJob, stop: Any = None) -> bool:
        """Queue a job; False if `stop` (a threading.Event) was set while waiting for room."""
        while True:
            if stop is not None and stop.is_set():
                return False
            try:
                self._jobs.put(job, timeout=0.5)
                return True
            except queue.Full:
                if not self.alive():
                    raise PacsmigError("every sender process has exited") from None

    def result(self, timeout: float) -> SendResult | None:
        try:
            r: SendResult = self._results.get(timeout=timeout)
            return r
        except queue.Empty:
            return None

    def result_nowait(self) -> SendResult | None:
        try:
            r: SendResult = self._results.get_nowait()
            return r
        except queue.Empty:
            return None

    def alive(self) -> bool:
        return any(p.is_alive() for p in self._procs)

    def close(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Finish queued jobs and stop (wait), or stop at once (in-flight jobs are in doubt)."""
        if not self._started:
            return
        if wait:
            for _ in self._procs:
                with contextlib.suppress(Exception):
                    self._jobs.put(None, timeout=timeout)
            deadline = time.monotonic() + timeout
            for p in self._procs:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():  # pragma: no cover - terminate ignored
                p.kill()
                p.join(5)
        self._started = False

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]


# -- in the worker process ------------------------------------------------------------------


class _Association:
    """The worker's association, re-opened when it is lost or needs other contexts."""

    def __init__(self, config: SenderConfig, established: Synchronized[int] | None = None) -> None:
        from pacsmig.inventory.dimse import peer_of

        self.config = config
        self.peer = peer_of(config.destination, "destination")
        self._pairs: set[tuple[str, str]] = set()
        self._stack = contextlib.ExitStack()
        self._session: Any = None
        self.last_used = time.monotonic()
        # Associations the workers hold right now (shared): a refused association while
        # others stand is the destination's association limit, not an outage.
        self._established = established
        self._counted = False

    def others_connected(self) -> bool:
        return self._established is not None and self._established.value > 0

    def _count(self, delta: int) -> None:
        if self._established is not None:
            with self._established.get_lock():
                self._established.value += delta

    def session(self, pair: tuple[str, str]) -> Any:
        from pacsmig.dicomnet.store import open_store

        if pair not in self._pairs:
            self.close()
            self._pairs = ({pair} | self._pairs) if len(self._pairs) < MAX_PAIRS else {pair}
        if self._session is None or not self._session.is_established:
            self.close()
            self._session = self._stack.enter_context(
                open_store(
                    self.config.calling_ae_title,
                    self.peer,  # built once per worker: peer_of also loads any TLS files
                    self._pairs,
                    syntaxes=self.config.syntaxes,
                    lossy=self.config.lossy,
                )
            )
            self._count(1)
            self._counted = True
        self.last_used = time.monotonic()
        return self._session

    def close(self) -> None:
        if self._counted:
            self._count(-1)
            self._counted = False
        self._session = None
        with contextlib.suppress(Exception):
            self._stack.close()
        self._stack = contextlib.ExitStack()


def _worker(
    config: SenderConfig,
    jobs: Any,
    results: Any,
    failures: Synchronized[int],
    parent_pid: int,
    established: Synchronized[int],
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what stops and when, and
    # ends a worker with SIGTERM (whose handler, inherited from the CLI, would raise).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.basicConfig(level=logging.WARNING)
    import pacsmig.dicomnet  # noqa: F401  (applies the pynetdicom patches in this process)

    assoc = _Association(config, established)
    try:
        while True:
            try:
                job = jobs.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent died (kill -9): nobody would journal what we send
                if time.monotonic() - assoc.last_used > IDLE_CLOSE_SECONDS:
                    assoc.close()
                continue
            if job is None or os.getppid() != parent_pid:
                return
            answer = _send_job(config, assoc, job, failures)
            results.put(answer)
            if answer.fatal or answer.breaker:
                return  # the run stops: another association would only be refused again
    finally:
        assoc.close()


def _prepare(job: SendJob) -> tuple[Path, int]:
    """Apply the planned corrections to the spooled file in place; returns (path, size)."""
    path = Path(job.path)
    if not job.corrections:
        return path, job.size
    from pacsmig.apply.process import apply_corrections

    data = apply_corrections(
        path.read_bytes(),
        job.corrections,
        modified_at=dt.datetime.fromisoformat(job.modified_at),
    )
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path, len(data)


def _send_job(
    config: SenderConfig, assoc: _Association, job: SendJob, failures: Synchronized[int]
) -> SendResult:
    """Send until stored, failed for good, or out of attempts.

    A lost answer ("in doubt") is sent again on a fresh association: storing the same SOP
    Instance twice is harmless, missing it is not.
    """
    from pacsmig.errors import AssociationRejected, NoAcceptedContexts, PacsError

    blank = SendResult(
        job_id=job.job_id, study_uid=job.study_uid, sop_uid=job.sop_uid, outcome=None
    )
    try:
        path, size = _prepare(job)
    except (PacsmigError, ValueError, OSError) as exc:
        return replace(
            blank,
            outcome=StoreOutcome(category="failure", code=None, comment=str(exc)),
            reason="correction_failed",
        )
    outcome: StoreOutcome | None = None
    problem = ""
    pair = (job.sop_class_uid, job.transfer_syntax)
    attempt = 0
    while attempt < config.max_attempts:
        attempt += 1
        no_association = False
        time.sleep(_backoff(config, failures.value))
        try:
            outcome = assoc.session(pair).send_file(path, job.sop_class_uid, job.transfer_syntax)
        except AssociationRejected as exc:
            if not exc.transient:
                return replace(blank, outcome=None, problem=str(exc), fatal=str(exc))
            outcome, problem, no_association = None, str(exc), True
        except NoAcceptedContexts as exc:
            # The destination takes no object of this kind in any syntax we can offer: a
            # fact about the instance, not a fault of the destination.
            assoc.close()
            outcome = StoreOutcome(
                category="failure", code=None, comment=f"unsupported_by_destination: {exc}"
            )
            break
        except PacsError as exc:  # unreachable, or it dropped the association request
            outcome, problem, no_association = None, str(exc), True
        else:
            if outcome.stored or not outcome.transient:
                with failures.get_lock():
                    failures.value = 0
                break
            problem = outcome.describe()
            # Fresh association for the next attempt: a lost answer leaves this one unusable,
            # and some PACSes free resources only when an association ends.
            assoc.close()
        if no_association and config.associations > 1 and assoc.others_connected():
            # A PACS that takes fewer associations than configured refuses the extra ones
            # ("local limit exceeded") while the others work: neither the instance nor the
            # destination is at fault. This worker waits for a free slot without spending
            # the instance's attempts or counting towards the breaker.
            attempt -= 1
            time.sleep(REQUEUE_PAUSE)
            continue
        with failures.get_lock():
            failures.value += 1
            in_a_row = failures.value
        log.info("destination: %s; attempt %d of %d", problem, attempt, config.max_attempts)
        if in_a_row >= config.breaker_threshold:
            return replace(
                blank, outcome=outcome, problem=problem, breaker=True, failures_in_a_row=in_a_row
            )
    return replace(blank, outcome=outcome, problem=problem, size=size)


def _backoff(config: SenderConfig, failures_in_a_row: int) -> float:
    if not failures_in_a_row or not config.backoff:
        return 0.0
    return config.backoff[min(failures_in_a_row, len(config.backoff)) - 1]


# -- send-only use (benchmarks, tools) --------------------------------------------------------


@dataclass(slots=True)
class SendStats:
    sent: int = 0
    failed: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


def send_files(
    calling_ae_title: str,
    destination: Endpoint,
    files: Sequence[tuple[Path, str, str]],
    associations: int = 1,
) -> SendStats:
    """Send (path, SOP class, transfer syntax) files over `associations` worker processes.

    The send stage of apply without plan or journal: what bench/throughput.py times.
    """
    pool = SenderPool(
        SenderConfig(
            calling_ae_title=calling_ae_title, destination=destination, associations=associations
        )
    ).start()
    stats = SendStats()
    t0 = time.perf_counter()
    try:
        pending = 0
        for n, (path, sop_class, ts) in enumerate(files):
            pool.submit(
                SendJob(
                    job_id=n,
                    study_uid="",
                    sop_uid=str(n),
                    sop_class_uid=sop_class,
                    transfer_syntax=ts,
                    path=str(path),
                    size=path.stat().st_size,
                )
            )
            pending += 1
            pending -= _drain(pool, stats, 0.0)
        while pending:
            pending -= _drain(pool, stats, 1.0)
            if pending and not pool.alive():
                raise PacsmigError("the sender processes exited early")
    finally:
        stats.seconds = time.perf_counter() - t0
        pool.close()
    return stats


def _drain(pool: SenderPool, stats: SendStats, timeout: float) -> int:
    done = 0
    for r in _results(pool, timeout):
        done += 1
        if r.outcome is not None and r.outcome.stored:
            stats.sent += 1
            stats.bytes_sent += r.size
        else:
            stats.failed += 1
            key = r.outcome.describe() if r.outcome else (r.problem or "no answer")
            stats.reasons[key] = stats.reasons.get(key, 0) + 1
    return done


def _results(pool: SenderPool, timeout: float) -> Iterator[SendResult]:
    r = pool.result(timeout)
    while r is not None:
        yield r
        r = pool.result(0.0)
