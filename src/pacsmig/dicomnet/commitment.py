"""Storage Commitment Push Model, SCU side (PS3.4 Annex J).

pacsmig asks the destination to take responsibility for instances with N-ACTION (action type
1, the well-known instance 1.2.840.10008.1.20.1.1, a Transaction UID and the Referenced SOP
Sequence); the answer is an N-EVENT-REPORT (event type 1: all committed, 2: some failed, with
a Failed SOP Sequence and a Failure Reason per instance). The destination may send that report
on the association of the request, while it is still open, or later on an association it
opens to pacsmig's own listener on `local.port` (Orthanc does the latter, to the AE its
DicomModalities give for our AE title).

Whichever association brings a report, it is handed to one process-wide registry keyed by
Transaction UID, where the requester waits for it: the listener need not know who asked.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import build_context, evt

from pacsmig.dicomnet.ae import Peer, associate
from pacsmig.errors import NoAcceptedContexts, PacsError

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 J.3.2.1)
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs (PS3.4 J.3.3.1)

# How long the request's own association stays open for a report on it; after that it is
# released and the report can only come on a new association to pacsmig's listener.
SAME_ASSOCIATION_WAIT = 2.0

# Failure Reason (0008,1197) values of PS3.4 J.3.3.1.1.1.
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}


def failure_text(code: int | None) -> str:
    if code is None:
        return "failed (no reason given)"
    return f"0x{code:04X} {FAILURE_REASONS.get(code, 'failure')}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentItem:
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitFailure:
    sop_uid: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentReport:
    """One N-EVENT-REPORT as received."""

    transaction_uid: str
    event_type: int
    committed: tuple[str, ...]
    failed: tuple[CommitFailure, ...]
    calling_ae_title: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentResult:
    """What became of one request: every requested instance is committed, failed or pending."""

    transaction_uid: str
    requested: tuple[str, ...]
    committed: tuple[str, ...] = ()
    failed: tuple[CommitFailure, ...] = ()
    timed_out: bool = False
    same_association: bool = False
    note: str = ""

    @property
    def uncommitted(self) -> tuple[str, ...]:
        done = set(self.committed)
        return tuple(uid for uid in self.requested if uid not in done)


class CommitmentRegistry:
    """Transaction UID -> the report that answers it; thread-safe, process-wide by default."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._reports: dict[str, CommitmentReport] = {}

    def expect(self, transaction_uid: str) -> None:
        with self._cond:
            self._pending.add(transaction_uid)

    def deliver(self, report: CommitmentReport) -> bool:
        """Hand over a report; False when nobody waits for its transaction (late or foreign)."""
        with self._cond:
            if report.transaction_uid not in self._pending:
                return False
            self._reports[report.transaction_uid] = report
            self._cond.notify_all()
            return True

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        with self._cond:
            self._cond.wait_for(lambda: transaction_uid in self._reports, max(0.0, timeout))
            return self._reports.get(transaction_uid)

    def forget(self, transaction_uid: str) -> None:
        with self._cond:
            self._pending.discard(transaction_uid)
            self._reports.pop(transaction_uid, None)


REGISTRY = CommitmentRegistry()


def _uids(seq: Any) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for item in seq or []:
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        reason = item.get("FailureReason")
        if uid:
            out.append((uid, int(reason) if reason is not None else None))
    return out


def parse_report(info: Dataset, event_type: int, calling: str = "") -> CommitmentReport:
    """The Event Information of an N-EVENT-REPORT (PS3.4 Table J.3-2)."""
    return CommitmentReport(
        transaction_uid=str(info.get("TransactionUID", "") or ""),
        event_type=event_type,
        committed=tuple(uid for uid, _ in _uids(info.get("ReferencedSOPSequence"))),
        failed=tuple(
            CommitFailure(sop_uid=uid, reason=failure_text(code))
            for uid, code in _uids(info.get("FailedSOPSequence"))
        ),
        calling_ae_title=calling,
    )


def handle_event_report(
    event: Any, registry: CommitmentRegistry | None = None, seen: list[str] | None = None
) -> Any:
    """An EVT_N_EVENT_REPORT handler body: deliver the report, answer success.

    A report nobody waits for (it came after the timeout) is acknowledged all the same: the
    peer did its part, and the next verify asks again. `seen` collects the Transaction UIDs
    reported on the association the handler is bound to.
    """
    try:
        if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT_PUSH:
            return 0x0112, None  # no such SOP instance: pacsmig takes no other reports
        report = parse_report(
            event.event_information,
            int(event.request.EventTypeID or 0),
            str(event.assoc.requestor.ae_title),
        )
    except Exception as exc:  # the peer must get a status, never a dropped association
        log.warning("unreadable storage commitment report: %s", type(exc).__name__)
        return 0x0110, None
    if seen is not None:
        seen.append(report.transaction_uid)
    if not (registry or REGISTRY).deliver(report):
        log.info("storage commitment report for an unknown or expired transaction")
    return 0x0000, None


def _request_dataset(transaction_uid: str, items: Sequence[CommitmentItem]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for item in items:
        ref = Dataset()
        ref.ReferencedSOPClassUID = item.sop_class_uid
        ref.ReferencedSOPInstanceUID = item.sop_uid
        refs.append(ref)
    ds.ReferencedSOPSequence = refs
    return ds


def new_transaction_uid(calling_ae_title: str, items: Sequence[CommitmentItem]) -> str:
    # Unique per request by construction (time and content), not random: reproducible in a
    # log, and two requests for the same instances at different times never collide.
    sources = [calling_ae_title, str(time.time_ns()), *(i.sop_uid for i in items[:16])]
    return str(generate_uid(entropy_srcs=sources))


def request_commitment(
    calling_ae_title: str,
    peer: Peer,
    items: Sequence[CommitmentItem],
    *,
    timeout: float,
    registry: CommitmentRegistry | None = None,
    same_association_wait: float = SAME_ASSOCIATION_WAIT,
) -> CommitmentResult:
    """Ask peer to commit items; wait up to `timeout` seconds for the report.

    Parameters
    ----------
    calling_ae_title : str
        pacsmig's AE title; a peer reporting on a separate association looks it up.
    peer : Peer
        The destination (Storage Commitment Push Model SCP).
    items : sequence of CommitmentItem
        The instances; an empty sequence asks nothing.
    timeout : float
        Seconds from the N-ACTION response to the report. A report on a separate association
        reaches pacsmig only through a listener (StorageSCP) handing it to the registry.

    Raises
    ------
    PacsError
        The peer cannot be associated with, does not support storage commitment, or refused
        the request (its N-ACTION status is a failure).

    References: PS3.4 J.3.2 (N-ACTION), J.3.3 (N-EVENT-REPORT).
    """
    registry = registry or REGISTRY
    requested = tuple(i.sop_uid for i in items)
    if not items:
        return CommitmentResult(transaction_uid="", requested=())
    tuid = new_transaction_uid(calling_ae_title, items)
    registry.expect(tuid)
    try:
        on_this_association: list[str] = []
        handlers = [(evt.EVT_N_EVENT_REPORT, handle_event_report, [registry, on_this_association])]
        contexts = [build_context(STORAGE_COMMITMENT_PUSH)]
        report: CommitmentReport | None = None
        with contextlib.ExitStack() as stack:
            try:
                assoc = stack.enter_context(
                    associate(calling_ae_title, peer, contexts, evt_handlers=handlers)
                )
            except NoAcceptedContexts:
                raise PacsError(
                    f"{peer.describe()} does not support storage commitment (Push Model)"
                ) from None
            status, _ = assoc.send_n_action(
                _request_dataset(tuid, items),
                REQUEST_STORAGE_COMMITMENT,
                STORAGE_COMMITMENT_PUSH,
                STORAGE_COMMITMENT_INSTANCE,
            )
            code = getattr(status, "Status", None)
            if code is None:
                raise PacsError(
                    f"{peer.describe()} did not answer the storage commitment request "
                    f"(timeout or aborted association after {peer.timeout:g}s)"
                )
            if code != 0x0000:
                comment = str(status.get("ErrorComment", "") or "")
                raise PacsError(
                    f"{peer.describe()} refused the storage commitment request with status "
                    f"0x{code:04X}" + (f": {comment}" if comment else "")
                )
            started = time.monotonic()
            report = registry.wait(tuid, min(timeout, same_association_wait))
        same = tuid in on_this_association
        if report is None:
            report = registry.wait(tuid, timeout - (time.monotonic() - started))
    finally:
        registry.forget(tuid)
    return _result(tuid, requested, report, same_association=same)


def _result(
    tuid: str,
    requested: tuple[str, ...],
    report: CommitmentReport | None,
    *,
    same_association: bool,
) -> CommitmentResult:
    if report is None:
        return CommitmentResult(
            transaction_uid=tuid,
            requested=requested,
            timed_out=True,
            note="not committed (timeout)",
        )
    wanted = set(requested)
    failed = tuple(f for f in report.failed if f.sop_uid in wanted)
    failed_uids = {f.sop_uid for f in failed}
    committed = tuple(u for u in report.committed if u in wanted and u not in failed_uids)
    # An instance the report names neither way is not committed: say so rather than assume.
    silent = wanted - set(committed) - failed_uids
    failed += tuple(
        CommitFailure(sop_uid=u, reason="not named in the commitment report")
        for u in sorted(silent)
    )
    return CommitmentResult(
        transaction_uid=tuid,
        requested=requested,
        committed=committed,
        failed=failed,
        same_association=same_association,
    )
