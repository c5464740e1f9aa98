"""C-GET and C-MOVE (PS3.4 Annex C.4): retrieve a study or some of its instances."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, build_role, evt
from pynetdicom.dsutils import decode, encode

from pacsmig.dicomnet import wire
from pacsmig.dicomnet.ae import Peer, associate, wire_associate
from pacsmig.dicomnet.contexts import (
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    fallback_storage_contexts,
    receive_contexts,
)
from pacsmig.dicomnet.received import InstanceSink, store_received, store_to_sink
from pacsmig.errors import PacsError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrieveResult:
    """The final response of a C-GET/C-MOVE: None when none came (timeout, abort)."""

    status: int | None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    comment: str = ""

    def describe(self) -> str:
        if self.status is None:
            return "no final response (timeout or aborted association)"
        text = f"status 0x{self.status:04X}, {self.completed} completed, {self.failed} failed"
        return f"{text}: {self.comment}" if self.comment else text


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrieveRequest:
    study_uid: str
    series_uid: str = ""
    sop_uids: tuple[str, ...] = ()

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.StudyInstanceUID = self.study_uid
        if self.sop_uids:
            ds.QueryRetrieveLevel = "IMAGE"
            ds.SeriesInstanceUID = self.series_uid
            ds.SOPInstanceUID = list(self.sop_uids) if len(self.sop_uids) > 1 else self.sop_uids[0]
        elif self.series_uid:
            ds.QueryRetrieveLevel = "SERIES"
            ds.SeriesInstanceUID = self.series_uid
        else:
            ds.QueryRetrieveLevel = "STUDY"
        return ds


def _final(responses: Any, peer: Peer, what: str) -> RetrieveResult:
    """The final response of pynetdicom's (status, identifier) pairs."""
    return _settle(
        (
            None
            if getattr(status, "Status", None) is None
            else RetrieveResult(
                status=int(status.Status),
                completed=int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                failed=int(status.get("NumberOfFailedSuboperations", 0) or 0),
                warning=int(status.get("NumberOfWarningSuboperations", 0) or 0),
                failed_uids=_failed_uids(identifier),
                comment=str(status.get("ErrorComment", "") or ""),
            )
            for status, identifier in responses
        ),
        peer,
        what,
    )


def _settle(answers: Iterable[RetrieveResult | None], peer: Peer, what: str) -> RetrieveResult:
    """The last non-pending answer; a missing answer (None) ends it with status None."""
    final: RetrieveResult | None = None
    for answer in answers:
        if answer is None:
            return RetrieveResult(status=None)
        if answer.status not in (0xFF00, 0xFF01):
            final = answer
    if final is None:
        raise PacsError(f"{peer.describe()} ended a {what} without a final status")
    return final


def _failed_uids(identifier: Dataset | None) -> tuple[str, ...]:
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return ()
    value = identifier.FailedSOPInstanceUIDList
    return tuple(str(v) for v in (value if isinstance(value, list) else [value]))


def c_get(
    calling_ae_title: str,
    peer: Peer,
    request: RetrieveRequest,
    sop_classes: Sequence[str],
    sink: InstanceSink,
    *,
    classes_known: bool = True,
) -> RetrieveResult:
    """C-GET on one association whose storage contexts cover the given SOP classes.

    With classes_known, each class is offered in every common transfer syntax so the source
    sends what it holds; otherwise (the source did not say) only uncompressed ones, for as
    many classes as fit.
    """
    try:
        storage = (
            receive_contexts(sop_classes)
            if classes_known
            else fallback_storage_contexts(sop_classes)
        )
    except ValueError:
        storage = fallback_storage_contexts(list(sop_classes)[:127])
    if wire.enabled():
        return _wire_get(calling_ae_title, peer, request, storage, sink)
    contexts = [build_context(STUDY_ROOT_GET), *storage]
    roles = [
        build_role(uid, scp_role=True)
        for uid in sorted({str(cx.abstract_syntax) for cx in storage})
    ]
    handlers = [(evt.EVT_C_STORE, store_to_sink, [sink])]
    with associate(calling_ae_title, peer, contexts, ext_neg=roles, evt_handlers=handlers) as assoc:
        get_cx = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_GET]
        if not get_cx:
            raise PacsError(f"{peer.describe()} does not accept Study Root C-GET")
        responses = assoc.send_c_get(request.identifier(), STUDY_ROOT_GET)
        return _final(responses, peer, "C-GET")


def c_move(
    calling_ae_title: str, peer: Peer, request: RetrieveRequest, move_ae_title: str
) -> RetrieveResult:
    """C-MOVE to move_ae_title; the instances arrive at that AE's Storage SCP, not here."""
    if wire.enabled():
        result = _wire_move(calling_ae_title, peer, request, move_ae_title)
    else:
        contexts = [build_context(STUDY_ROOT_MOVE)]
        with associate(calling_ae_title, peer, contexts) as assoc:
            if not assoc.accepted_contexts:
                raise PacsError(f"{peer.describe()} does not accept Study Root C-MOVE")
            responses = assoc.send_c_move(request.identifier(), move_ae_title, STUDY_ROOT_MOVE)
            result = _final(responses, peer, "C-MOVE")
    if result.status == 0xA801:
        raise PacsError(
            f"{peer.describe()} does not know the move destination {move_ae_title!r}: "
            "add pacsmig's AE title, host and local.port to the source's configuration"
        )
    return result


def _wire_get(
    calling_ae_title: str,
    peer: Peer,
    request: RetrieveRequest,
    storage: Sequence[Any],
    sink: InstanceSink,
) -> RetrieveResult:
    """C-GET by pacsmig's own wire code: the instances arrive on this association as C-STOREs
    it answers itself (through pynetdicom each cost about 3 ms of CPU)."""
    proposed: list[tuple[str, Sequence[str]]] = [
        (STUDY_ROOT_GET, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    ]
    proposed += [
        (str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax]) for cx in storage
    ]
    roles = sorted({str(cx.abstract_syntax) for cx in storage})

    def on_store(sop_class: str, sop_uid: str, syntax: str, dataset: bytes) -> int:
        return store_received(sink, sop_class, sop_uid, syntax, dataset)

    with wire_associate(calling_ae_title, peer, proposed, scp_roles=roles) as assoc:
        found = assoc.context_of(STUDY_ROOT_GET)
        if found is None:
            raise PacsError(f"{peer.describe()} does not accept Study Root C-GET")
        fields: dict[int, int | str] = {0x0002: STUDY_ROOT_GET, 0x0100: wire.C_GET_RQ}
        responses = assoc.request(
            found[0], fields, _identifier(request, found[1]), wire.C_GET_RSP, on_store=on_store
        )
        return _wire_final(responses, peer, "C-GET", found[1])


def _identifier(request: RetrieveRequest, syntax: str) -> bytes:
    identifier = encode(request.identifier(), syntax == ImplicitVRLittleEndian, True)
    if identifier is None:
        raise PacsError("a retrieve identifier could not be encoded")
    return identifier


def _wire_final(responses: Any, peer: Peer, what: str, syntax: str) -> RetrieveResult:
    """The final response of the wire code's (command, data set) pairs."""

    def answers() -> Iterator[RetrieveResult | None]:
        for rsp, data in responses:
            if rsp is None:
                yield None  # no answer: request() has said why and aborted
                continue
            status = rsp.us(0x0900)
            if status is None:  # request() raises on these; skipped like a pending one
                continue
            identifier = (
                decode(io.BytesIO(data), syntax == ImplicitVRLittleEndian, True) if data else None
            )
            yield RetrieveResult(
                status=status,
                completed=rsp.us(0x1021, 0) or 0,
                failed=rsp.us(0x1022, 0) or 0,
                warning=rsp.us(0x1023, 0) or 0,
                failed_uids=_failed_uids(identifier),
                comment=rsp.text(0x0902),
            )

    return _settle(answers(), peer, what)


def _wire_move(
    calling_ae_title: str, peer: Peer, request: RetrieveRequest, move_ae_title: str
) -> RetrieveResult:
    """C-MOVE by pacsmig's own wire code: pynetdicom's reactor polls every millisecond for as
    long as a move runs, which with several studies in flight cost a fifth of a core."""
    syntaxes = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    with wire_associate(calling_ae_title, peer, [(STUDY_ROOT_MOVE, syntaxes)]) as assoc:
        found = assoc.context_of(STUDY_ROOT_MOVE)
        if found is None:
            raise PacsError(f"{peer.describe()} does not accept Study Root C-MOVE")
        cid, syntax = found
        fields: dict[int, int | str] = {
            0x0002: STUDY_ROOT_MOVE,
            0x0100: wire.C_MOVE_RQ,
            0x0600: move_ae_title,
        }
        responses = assoc.request(cid, fields, _identifier(request, syntax), wire.C_MOVE_RSP)
        return _wire_final(responses, peer, "C-MOVE", syntax)
