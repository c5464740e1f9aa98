"""Associations: open one with clear, typed failures."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from pacsmig.dicomnet import wire
from pacsmig.dicomnet.tls import TlsConfig, client_context, describe_tls_error, handshake_error
from pacsmig.errors import AssociationRejected, NoAcceptedContexts, PacsError, PeerUnreachable

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """Where and who to associate with; the spec's endpoints convert to this."""

    ae_title: str
    host: str
    port: int
    timeout: float = 30.0
    max_pdu: int = 0
    role: str = "peer"  # "source" / "destination", for messages
    tls: TlsConfig | None = None

    def describe(self) -> str:
        return f"{self.role} {self.ae_title} at {self.host}:{self.port}"


_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def make_ae(calling_ae_title: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(CONNECT_TIMEOUT, timeout)
    ae.maximum_pdu_size = 0  # unlimited: fewer, larger P-DATA PDUs
    return ae


def describe_rejection(assoc: Association, peer: Peer, calling: str) -> AssociationRejected:
    prim = assoc.acceptor.primitive
    return rejection(
        getattr(prim, "result", None),
        getattr(prim, "result_source", None),
        getattr(prim, "diagnostic", None),
        peer,
        calling,
    )


def rejection(
    result: int | None, source: int | None, diag: int | None, peer: Peer, calling: str
) -> AssociationRejected:
    """The error for an A-ASSOCIATE-RJ (PS3.8 9.3.4), with a hint for the usual causes."""
    reason = _REJECT_REASONS.get((source or 0, diag or 0), f"source {source}, reason {diag}")
    transient = result == 2
    hint = ""
    if (source, diag) == (1, 3):
        hint = f" (the peer does not know our AE title {calling!r}; add it to its configuration)"
    elif (source, diag) == (1, 7):
        hint = f" (check the configured AE title {peer.ae_title!r})"
    kind = "transiently" if transient else "permanently"
    return AssociationRejected(
        f"{peer.describe()} {kind} rejected the association from {calling}: {reason}{hint}",
        transient=transient,
    )


def unreachable(peer: Peer, exc: OSError) -> PeerUnreachable:
    if isinstance(exc, TimeoutError):
        return PeerUnreachable(f"cannot connect to {peer.describe()}: connection timed out")
    text = exc.strerror or str(exc)
    return PeerUnreachable(f"cannot connect to {peer.describe()}: {text.lower()}")


def incomplete(peer: Peer) -> PacsError:
    return PacsError(
        f"{peer.describe()} accepted a connection but did not complete the association "
        "(not a DICOM service, TLS required, or it aborted)"
    )


def _unreachable(peer: Peer) -> PacsError:
    try:
        with socket.create_connection((peer.host, peer.port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        return unreachable(peer, exc)
    return incomplete(peer)


@contextlib.contextmanager
def associate(
    calling_ae_title: str,
    peer: Peer,
    contexts: Sequence[PresentationContext],
    *,
    ext_neg: list[Any] | None = None,
    evt_handlers: list[Any] | None = None,
) -> Iterator[Association]:
    """Open an association, yield it, release (or abort) it on the way out."""
    if not contexts:
        raise PacsError(f"no presentation contexts to propose to {peer.describe()}")
    if len(contexts) > 128:
        raise PacsError(f"{len(contexts)} presentation contexts exceed DICOM's limit of 128")
    ae = make_ae(calling_ae_title, peer.timeout)
    ae.requested_contexts = list(contexts)
    ctx = client_context(peer.tls) if peer.tls is not None else None
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        max_pdu=peer.max_pdu,
        ext_neg=ext_neg,
        evt_handlers=evt_handlers,
        tls_args=(ctx, peer.host) if ctx is not None else None,
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            raise describe_rejection(assoc, peer, calling_ae_title)
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            refused = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
            raise NoAcceptedContexts(
                f"{peer.describe()} accepted none of the {len(assoc.rejected_contexts)} proposed "
                f"presentation contexts (SOP classes {', '.join(refused[:4])}"
                f"{', ...' if len(refused) > 4 else ''})"
            )
        if ctx is not None:
            why = handshake_error(peer.host, peer.port, ctx, CONNECT_TIMEOUT)
            if why:
                raise PeerUnreachable(f"cannot associate with {peer.describe()} over TLS: {why}")
        raise _unreachable(peer)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            try:
                assoc.release()
            except Exception:  # release must never mask the real error
                assoc.abort()
        ae.shutdown()


@contextlib.contextmanager
def wire_associate(
    calling: str,
    peer: Peer,
    proposed: Sequence[tuple[str, Sequence[str]]],
    *,
    scp_roles: Sequence[str] = (),
) -> Iterator[wire.WireAssociation]:
    """An association by pacsmig's own wire code (``wire.py``), with the errors ``associate``
    raises; released (or aborted) on the way out."""
    if len(proposed) > 128:
        raise PacsError(f"{len(proposed)} presentation contexts exceed DICOM's limit of 128")
    tls = client_context(peer.tls) if peer.tls is not None else None
    try:
        sock = wire.connect(
            peer.host,
            peer.port,
            connect_timeout=min(CONNECT_TIMEOUT, peer.timeout),
            timeout=peer.timeout,
            tls=tls,
        )
    except OSError as exc:
        if tls is not None and not isinstance(exc, ConnectionRefusedError | socket.gaierror):
            raise PeerUnreachable(
                f"cannot associate with {peer.describe()} over TLS: {describe_tls_error(exc)}"
            ) from None
        raise unreachable(peer, exc) from None
    try:
        assoc = wire.WireAssociation(
            sock,
            calling=calling,
            called=peer.ae_title,
            contexts=proposed,
            max_pdu=peer.max_pdu,
            scp_roles=scp_roles,
        )
    except wire.Rejected as exc:
        sock.close()
        rj = exc.reject
        raise rejection(rj.result, rj.source, rj.reason, peer, calling) from None
    except wire.NotAssociated:
        sock.close()
        raise incomplete(peer) from None
    if not assoc.accepted:
        assoc.release()
        refused = sorted(set(assoc.refused))
        raise NoAcceptedContexts(
            f"{peer.describe()} accepted none of the {len(proposed)} proposed "
            f"presentation contexts (SOP classes {', '.join(refused[:4])}"
            f"{', ...' if len(refused) > 4 else ''})"
        )
    try:
        yield assoc
    finally:
        if assoc.established:
            assoc.release()
