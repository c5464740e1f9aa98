"""A scriptable Storage SCP that misbehaves on purpose, for fault-injection tests.

In the spirit of dcm4che's BehavioralCStoreSCP: per SOP Instance UID, or by default, a C-STORE
can be answered with a chosen status, make the handler raise (pynetdicom then answers 0xC211),
be delayed past the caller's DIMSE timeout, or abort the association; each behaviour can be
limited to the first N attempts, after which the next one (or plain success) applies.
Associations can be rejected, permanently or transiently, for a number of attempts.

It records every C-STORE request it receives and every instance it keeps, and answers C-ECHO
and a basic Study Root C-FIND (STUDY, SERIES, IMAGE) over what it kept, so pacsmig can use it
as its destination. Everything runs in-process on a free loopback port; `close()` stops it.

With `storage_commitment(...)` it is also a Storage Commitment Push Model SCP (PS3.4 Annex J):
it answers N-ACTION, then reports on the same association, on one it opens to a given AE, or
never; instances it did not keep, and those scripted to fail, are reported failed.
"""

from __future__ import annotations

import fnmatch
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from types import TracebackType
from typing import Any, Literal, Self

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_role,
    evt,
)
from pynetdicom.association import Association

from pacsmig.dicomnet import _patches
from pacsmig.dicomnet.commitment import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH
from pacsmig.dicomnet.contexts import STUDY_ROOT_FIND
from pacsmig.testing.servers import LOOPBACK, free_port

__all__ = [
    "Behaviour",
    "CommitmentRequest",
    "FaultSCP",
    "StoreAttempt",
    "abort",
    "delay",
    "raise_error",
    "respond",
]

VERIFICATION = "1.2.840.10008.1.1"

Action = Literal["status", "raise", "delay", "abort"]
CommitmentMode = Literal["same", "separate", "none", "refuse"]


def _keeps(status: int) -> bool:
    # Success and warnings mean "stored" (PS3.4 B.2.3); anything else means it was not.
    return status == 0x0000 or status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """What the SCP does with one C-STORE request; `times=None` applies to every attempt."""

    action: Action
    status: int = 0x0000
    comment: str = ""
    seconds: float = 0.0
    keep: bool = True
    times: int | None = None


def respond(status: int, comment: str = "", *, times: int | None = None) -> Behaviour:
    """Answer with this status; the instance is kept only for success and warnings."""
    return Behaviour(
        action="status", status=status, comment=comment, keep=_keeps(status), times=times
    )


def raise_error(*, times: int | None = None) -> Behaviour:
    """Raise in the handler: pynetdicom answers 0xC211 and keeps nothing."""
    return Behaviour(action="raise", keep=False, times=times)


def delay(
    seconds: float, *, status: int = 0x0000, keep: bool | None = None, times: int | None = None
) -> Behaviour:
    """Wait before answering (longer than the caller's DIMSE timeout to make it give up).

    By default the instance is kept after the wait when the status says stored: the caller,
    having timed out, cannot know that, which is what makes the outcome "in doubt".
    """
    return Behaviour(
        action="delay",
        status=status,
        seconds=seconds,
        keep=_keeps(status) if keep is None else keep,
        times=times,
    )


def abort(*, keep: bool = False, times: int | None = None) -> Behaviour:
    """Abort the association instead of answering; with keep, after storing the instance."""
    return Behaviour(action="abort", keep=keep, times=times)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreAttempt:
    """One C-STORE request as the SCP saw it."""

    sop_uid: str
    at: float  # time.time() when the request arrived
    action: Action
    status: int | None  # the status answered; None when no answer was sent
    kept: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentRequest:
    """One N-ACTION the SCP received, and what it reported (None: no report sent)."""

    transaction_uid: str
    sop_uids: tuple[str, ...]
    calling_ae_title: str
    reported_failed: tuple[str, ...] | None = None


@dataclass(slots=True)
class _Commitment:
    mode: CommitmentMode
    fail: dict[str, int]
    report_to: tuple[str, str, int] | None
    delay: float


@dataclass(slots=True)
class _Step:
    behaviour: Behaviour
    remaining: int | None


@dataclass(slots=True)
class _Kept:
    header: Dataset
    data: bytes
    count: int


class _ScriptedAE(AE):
    """An AE whose acceptance checks can be scripted per association.

    pynetdicom decides rejection inside the association's own thread (the Association is the
    current thread) by reading `require_calling_aet` and `maximum_associations`: answering
    differently there, for chosen associations only, rejects exactly those.
    """

    def __init__(self, ae_title: str, owner: FaultSCP) -> None:
        self._owner_ref = weakref.ref(owner)
        self._decisions: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()
        self._decide_lock = threading.Lock()
        super().__init__(ae_title=ae_title)

    def _decision(self) -> str:
        thread = threading.current_thread()
        owner = self._owner_ref()
        if not isinstance(thread, Association) or owner is None:
            return ""
        with self._decide_lock:
            if thread not in self._decisions:
                self._decisions[thread] = owner._decide_rejection(thread)
            return self._decisions[thread]

    @property
    def require_calling_aet(self) -> list[str]:
        if self._decision() == "permanent":
            # No caller is called this: pynetdicom rejects "calling AE title not recognised".
            return ["\\NOBODY\\"]
        return list(self._require_calling_aet)

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        AE.require_calling_aet.fset(self, ae_titles)  # type: ignore[attr-defined]

    @property
    def maximum_associations(self) -> int:
        if self._decision() == "transient":
            # Any count exceeds it: pynetdicom rejects transiently, "local limit exceeded".
            return -1
        return int(self._maximum_associations)

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        AE.maximum_associations.fset(self, value)  # type: ignore[attr-defined]


class FaultSCP:
    """A Storage (and C-FIND, C-ECHO) SCP with scripted faults; thread-safe.

    Parameters
    ----------
    ae_title : str
        The SCP's AE title; associations calling another title are rejected.
    allowed_calling : list of str, optional
        When given, only these calling AE titles are accepted (others: permanent rejection).
    timeout : float
        The SCP's own ACSE, DIMSE and network timeouts.
    """

    def __init__(
        self,
        ae_title: str = "FAULTSCP",
        *,
        port: int | None = None,
        allowed_calling: list[str] | None = None,
        timeout: float = 30.0,
        transfer_syntaxes: list[str] | None = None,
        refuse_sop_classes: list[str] | None = None,
        commitment: bool = False,
    ) -> None:
        """transfer_syntaxes / refuse_sop_classes narrow what the SCP accepts (PACS that
        store only some syntaxes or object types); commitment offers Storage Commitment (its
        behaviour set by `storage_commitment`, refusing every request until then)."""
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._per_sop: dict[str, list[_Step]] = {}
        self._default: list[_Step] = []
        self._reject: list[tuple[str, int, bool]] = []  # (kind, remaining, storage_only)
        self._kept: dict[str, _Kept] = {}
        self._attempts: list[StoreAttempt] = []
        self.associations_requested = 0
        self.associations_rejected = 0
        self._commitment: _Commitment | None = None
        self._commit_requests: list[CommitmentRequest] = []
        self._ae = _ScriptedAE(ae_title, self)
        self._ae.require_called_aet = True
        if allowed_calling:
            self._ae.require_calling_aet = list(allowed_calling)
        for value in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(self._ae, value, timeout)
        self._ae.maximum_pdu_size = 0
        self._ae.maximum_associations = 32
        syntaxes = transfer_syntaxes or [str(ts) for ts in ALL_TRANSFER_SYNTAXES]
        refused = set(refuse_sop_classes or ())
        for cx in AllStoragePresentationContexts:
            if str(cx.abstract_syntax) not in refused:
                self._ae.add_supported_context(str(cx.abstract_syntax), syntaxes)
        self._ae.add_supported_context(STUDY_ROOT_FIND)
        self._ae.add_supported_context(VERIFICATION)
        if commitment:
            # pynetdicom copies the supported contexts when the server starts.
            self._ae.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
        self._server: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Self:
        # TCP_NODELAY on accepted sockets too: each answer would otherwise wait ~40 ms.
        _patches.apply()
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_N_ACTION, self._on_n_action),
        ]
        self._server = self._ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers
        )
        return self

    def close(self) -> None:
        """Stop listening, abort what is open, and cut scripted delays short."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._ae.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting ----------------------------------------------------------------------
    def script(self, sop_uid: str, *behaviours: Behaviour) -> None:
        """Behaviours for one instance, used in order (each for its `times`), then success."""
        with self._lock:
            self._per_sop[sop_uid] = [_Step(b, b.times) for b in behaviours]

    def script_default(self, *behaviours: Behaviour) -> None:
        """Behaviours for requests of instances without a script of their own, in order."""
        with self._lock:
            self._default = [_Step(b, b.times) for b in behaviours]

    def reject_associations(
        self, count: int, *, transient: bool, storage_only: bool = False
    ) -> None:
        """Reject the next `count` associations (only those proposing storage, if asked).

        Permanent: "calling AE title not recognised" (result 1, source 1, reason 3).
        Transient: "local limit exceeded" (result 2, source 3, reason 2).
        """
        with self._lock:
            self._reject.append(("transient" if transient else "permanent", count, storage_only))

    def storage_commitment(
        self,
        mode: CommitmentMode,
        *,
        fail: dict[str, int] | None = None,
        report_to: tuple[str, str, int] | None = None,
        delay: float = 0.05,
    ) -> None:
        """How to answer storage commitment requests (construct with commitment=True).

        mode: "same" reports on the requesting association (`delay` seconds after answering
        the N-ACTION), "separate" on a new association to `report_to` (AE title, host, port),
        "none" never reports, "refuse" answers the N-ACTION with 0x0110. `fail` maps SOP
        Instance UIDs to the Failure Reason to report; instances not kept fail with 0x0112.
        """
        if mode == "separate" and report_to is None:
            raise ValueError("a separate-association report needs report_to")
        with self._lock:
            self._commitment = _Commitment(
                mode=mode, fail=dict(fail or {}), report_to=report_to, delay=delay
            )

    def commitment_requests(self) -> list[CommitmentRequest]:
        with self._lock:
            return list(self._commit_requests)

    def clear_faults(self) -> None:
        with self._lock:
            self._per_sop.clear()
            self._default.clear()
            self._reject.clear()

    def forget(self) -> None:
        """Drop what was kept and recorded (the scripts stay)."""
        with self._lock:
            self._kept.clear()
            self._attempts.clear()

    # -- records ------------------------------------------------------------------------
    def stored_counts(self) -> dict[str, int]:
        """SOP Instance UID -> how many times it was kept (answered as stored or not)."""
        with self._lock:
            return {uid: k.count for uid, k in self._kept.items()}

    def stored_uids(self) -> set[str]:
        with self._lock:
            return set(self._kept)

    def data(self, sop_uid: str) -> bytes:
        """The Part 10 bytes last kept for this instance; KeyError if none."""
        with self._lock:
            return self._kept[sop_uid].data

    def attempts(self, sop_uid: str | None = None) -> list[StoreAttempt]:
        """Every C-STORE request received (of one instance, if given), in arrival order."""
        with self._lock:
            return [a for a in self._attempts if sop_uid is None or a.sop_uid == sop_uid]

    def attempt_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.attempts():
            counts[a.sop_uid] = counts.get(a.sop_uid, 0) + 1
        return counts

    # -- internals ----------------------------------------------------------------------
    def _decide_rejection(self, assoc: Association) -> str:
        storage = any(
            str(cx.abstract_syntax) not in (STUDY_ROOT_FIND, VERIFICATION)
            for cx in assoc.requestor.requested_contexts
        )
        with self._lock:
            self.associations_requested += 1
            for i, (kind, remaining, storage_only) in enumerate(self._reject):
                if storage_only and not storage:
                    continue
                if remaining <= 1:
                    del self._reject[i]
                else:
                    self._reject[i] = (kind, remaining - 1, storage_only)
                self.associations_rejected += 1
                return kind
        return ""

    def _next(self, sop_uid: str) -> Behaviour | None:
        with self._lock:
            for steps in (self._per_sop.get(sop_uid), self._default):
                if not steps:
                    continue
                step = steps[0]
                if step.remaining is not None:
                    step.remaining -= 1
                    if step.remaining <= 0:
                        steps.pop(0)
                return step.behaviour
        return None

    def _arrived(self, attempt: StoreAttempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    def _keep(self, sop_uid: str, event: Any) -> None:
        data = event.encoded_dataset(include_meta=True)
        header = dcmread(BytesIO(data), stop_before_pixels=True)
        with self._lock:
            previous = self._kept.get(sop_uid)
            count = previous.count + 1 if previous is not None else 1
            self._kept[sop_uid] = _Kept(header=header, data=data, count=count)

    def _on_store(self, event: Any) -> int | Dataset:
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        at = time.time()
        behaviour = self._next(sop_uid) or Behaviour(action="status")
        answered = None if behaviour.action == "abort" else behaviour.status
        if behaviour.action == "raise":
            answered = 0xC211
        self._arrived(
            StoreAttempt(
                sop_uid=sop_uid,
                at=at,
                action=behaviour.action,
                status=answered,
                kept=behaviour.keep,
            )
        )
        if behaviour.action == "raise":
            raise RuntimeError("scripted failure in the storage handler")
        if behaviour.action == "delay":
            self._closing.wait(behaviour.seconds)
        if behaviour.keep:
            self._keep(sop_uid, event)
        if behaviour.action == "abort":
            event.assoc.abort()
            return 0x0000  # never sent: pynetdicom drops answers on an aborted association
        if behaviour.comment:
            rsp = Dataset()
            rsp.Status = behaviour.status
            rsp.ErrorComment = behaviour.comment
            return rsp
        return behaviour.status

    # -- storage commitment ---------------------------------------------------------------
    def _on_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        with self._lock:
            script = self._commitment
            kept = set(self._kept)
        info: Dataset = event.action_information
        refs = [
            (str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID))
            for r in info.get("ReferencedSOPSequence", [])
        ]
        request = CommitmentRequest(
            transaction_uid=str(info.TransactionUID),
            sop_uids=tuple(uid for _, uid in refs),
            calling_ae_title=str(event.assoc.requestor.ae_title),
        )
        if script is None or script.mode == "refuse":
            self._record_commit(request)
            return 0x0110, None
        failed = {
            uid: script.fail.get(uid, 0x0112)
            for _, uid in refs
            if uid in script.fail or uid not in kept
        }
        report = Dataset()
        report.TransactionUID = request.transaction_uid
        report.ReferencedSOPSequence = [_ref(c, u) for c, u in refs if u not in failed]
        if failed:
            report.FailedSOPSequence = [_ref(c, u, failed[u]) for c, u in refs if u in failed]
        event_type = 2 if failed else 1
        if script.mode == "none":
            self._record_commit(request)
        else:
            self._record_commit(request, tuple(sorted(failed)))
            threading.Thread(
                target=self._report,
                args=(script, event.assoc, report, event_type),
                daemon=True,
            ).start()
        return 0x0000, None

    def _record_commit(
        self, request: CommitmentRequest, failed: tuple[str, ...] | None = None
    ) -> None:
        with self._lock:
            self._commit_requests.append(
                CommitmentRequest(
                    transaction_uid=request.transaction_uid,
                    sop_uids=request.sop_uids,
                    calling_ae_title=request.calling_ae_title,
                    reported_failed=failed,
                )
            )

    def _report(self, script: _Commitment, assoc: Any, report: Dataset, event_type: int) -> None:
        # After the N-ACTION response has gone out: the handler must return first.
        if self._closing.wait(script.delay):
            return
        if script.mode == "same":
            assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
            )
            return
        assert script.report_to is not None
        aet, host, port = script.report_to
        ae = AE(ae_title=self.ae_title)
        # The requestor of this association is the commitment SCP: it must say so.
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
        roles: list[Any] = [build_role(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)]
        out = ae.associate(host, port, ae_title=aet, ext_neg=roles)
        if out.is_established:
            try:
                out.send_n_event_report(
                    report, event_type, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
                )
            finally:
                out.release()
        ae.shutdown()

    # -- C-FIND -------------------------------------------------------------------------
    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query: Dataset = event.identifier
        level = str(query.get("QueryRetrieveLevel", "")).upper()
        if level not in _LEVEL_KEY:
            yield 0xA900, None
            return
        with self._lock:
            headers = [k.header for k in self._kept.values()]
        for group in _groups(headers, level):
            if not all(_matches(group[0], elem.keyword, elem.value) for elem in query):
                continue
            yield 0xFF00, _answer(query, level, group, headers)


_LEVEL_KEY = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_NOT_MATCHED = {
    "QueryRetrieveLevel",
    "SpecificCharacterSet",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "ModalitiesInStudy",
}
_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}


def _ref(sop_class: str, sop_uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    text = str(value)
    return text.split("\\") if text else []


def _groups(headers: list[Dataset], level: str) -> list[list[Dataset]]:
    key = _LEVEL_KEY[level]
    out: dict[str, list[Dataset]] = {}
    for ds in headers:
        out.setdefault(str(ds.get(key, "")), []).append(ds)
    return list(out.values())


def _matches(ds: Dataset, keyword: str, wanted: Any) -> bool:
    """Single value, list of UIDs, wildcard and range matching (PS3.4 C.2.2.2), roughly."""
    if not keyword or keyword in _NOT_MATCHED:
        return True
    patterns = _values(wanted)
    if not patterns or patterns == ["*"]:
        return True
    have = str(ds.get(keyword, "") or "")
    if keyword in _UIDS:
        return have in patterns
    for pattern in patterns:
        if "-" in pattern and keyword.endswith(("Date", "Time")):
            low, _, high = pattern.partition("-")
            if (not low or have >= low) and (not high or have <= high):
                return True
        elif fnmatch.fnmatchcase(have, pattern):
            return True
    return False


def _answer(query: Dataset, level: str, group: list[Dataset], headers: list[Dataset]) -> Dataset:
    first = group[0]
    ds = Dataset()
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    ds.QueryRetrieveLevel = level
    study_uid = str(first.get("StudyInstanceUID", ""))
    series_uid = str(first.get("SeriesInstanceUID", ""))
    in_study = [h for h in headers if str(h.get("StudyInstanceUID", "")) == study_uid]
    in_series = [h for h in in_study if str(h.get("SeriesInstanceUID", "")) == series_uid]
    computed: dict[str, Any] = {
        "NumberOfStudyRelatedSeries": len({str(h.get("SeriesInstanceUID", "")) for h in in_study}),
        "NumberOfStudyRelatedInstances": len(in_study),
        "NumberOfSeriesRelatedInstances": len(in_series),
        "ModalitiesInStudy": sorted({str(h.get("Modality", "")) for h in in_study} - {""}),
    }
    wanted = [elem.keyword for elem in query if elem.keyword]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in wanted and keyword == _LEVEL_KEY[level]:
            wanted.append(keyword)
    for keyword in wanted:
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if keyword in computed:
            setattr(ds, keyword, computed[keyword])
        elif keyword in first:
            ds.add(first[keyword])
        else:
            setattr(ds, keyword, "")
    return ds
