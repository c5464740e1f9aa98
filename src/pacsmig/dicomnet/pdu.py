"""The DICOM Upper Layer (PS3.8 section 9) and DIMSE command sets (PS3.7), for the hot path.

pynetdicom runs every PDU through an event queue, a state machine and a polling reactor
thread, and encodes each command set through pydicom: measured here, 2-3 ms of CPU per
C-STORE on either end, which made pacsmig, not the PACS, the bottleneck of a relay. The
C-STORE hot path (``wire.py``: the sender and the C-MOVE destination) speaks the protocol
directly with these encoders; everything else (C-FIND, C-MOVE, C-GET, storage commitment)
stays on pynetdicom.

PDU and item headers are big-endian; command sets are Implicit VR Little Endian.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATASET = 0x0101

# Context results in an A-ASSOCIATE-AC (PS3.8 9.3.3.2)
ACCEPTANCE = 0
USER_REJECTION = 1
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# Nothing legitimate comes near this; a larger length is a peer that is not speaking DICOM.
MAX_SANE_PDU = 1 << 30


class ProtocolError(Exception):
    """The peer broke the Upper Layer protocol, closed the connection, or timed out."""


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def _ascii(raw: bytes | bytearray) -> str:
    return raw.decode("ascii", "replace").rstrip("\0 ").lstrip(" ")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextResult:
    context_id: int
    result: int
    transfer_syntax: str  # the accepted one; for a refused context, as the acceptor sent it


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateRequest:
    called_ae: str
    calling_ae: str
    contexts: tuple[ProposedContext, ...]
    max_pdu: int = 0  # the requestor's maximum receive length; 0 = unlimited
    implementation_class_uid: str = ""
    implementation_version: str = ""
    application_context: str = APPLICATION_CONTEXT
    protocol_version: int = 1
    # SOP classes for which the requestor proposes the SCP role (C-GET's C-STOREs, PS3.7
    # D.3.3.4). Encoded only: a storage acceptor here answers none and keeps the defaults.
    scp_roles: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateAccept:
    called_ae: str
    calling_ae: str
    results: tuple[ContextResult, ...]
    max_pdu: int = 0
    implementation_class_uid: str = ""
    implementation_version: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateReject:
    result: int  # 1 permanent, 2 transient
    source: int
    reason: int


def _user_information(
    max_pdu: int, class_uid: str, version: str, scp_roles: tuple[str, ...] = ()
) -> bytes:
    sub = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, class_uid.encode("ascii"))
    if version:
        sub += _item(0x55, version.encode("ascii")[:16])
    for uid in scp_roles:  # SCU role 0, SCP role 1; after the version name, as pynetdicom
        raw = uid.encode("ascii")
        sub += _item(0x54, struct.pack(">H", len(raw)) + raw + b"\0\1")
    return _item(0x50, sub)


def _associate(kind: int, called: str, calling: str, items: bytes, version: int = 1) -> bytes:
    fixed = struct.pack(">HH", version, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    return _pdu(kind, fixed + items)


def encode_associate_rq(rq: AssociateRequest) -> bytes:
    items = _item(0x10, rq.application_context.encode("ascii"))
    for cx in rq.contexts:
        sub = _item(0x30, cx.abstract_syntax.encode("ascii"))
        sub += b"".join(_item(0x40, ts.encode("ascii")) for ts in cx.transfer_syntaxes)
        items += _item(0x20, struct.pack(">BBBB", cx.context_id, 0, 0, 0) + sub)
    items += _user_information(
        rq.max_pdu, rq.implementation_class_uid, rq.implementation_version, rq.scp_roles
    )
    return _associate(A_ASSOCIATE_RQ, rq.called_ae, rq.calling_ae, items, rq.protocol_version)


def encode_associate_ac(ac: AssociateAccept) -> bytes:
    items = _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for r in ac.results:
        sub = _item(0x40, r.transfer_syntax.encode("ascii"))
        items += _item(0x21, struct.pack(">BBBB", r.context_id, 0, r.result, 0) + sub)
    items += _user_information(ac.max_pdu, ac.implementation_class_uid, ac.implementation_version)
    return _associate(A_ASSOCIATE_AC, ac.called_ae, ac.calling_ae, items)


def encode_associate_rj(rj: AssociateReject) -> bytes:
    return _pdu(A_ASSOCIATE_RJ, struct.pack(">BBBB", 0, rj.result, rj.source, rj.reason))


def encode_release_rq() -> bytes:
    return _pdu(A_RELEASE_RQ, b"\0" * 4)


def encode_release_rp() -> bytes:
    return _pdu(A_RELEASE_RP, b"\0" * 4)


def encode_abort(source: int = 0, reason: int = 0) -> bytes:
    """source 0: service user (pacsmig); 2: service provider, with reason (PS3.8 9.3.8)."""
    return _pdu(A_ABORT, struct.pack(">BBBB", 0, 0, source, reason))


def _items(data: bytes | bytearray | memoryview, start: int) -> Iterator[tuple[int, memoryview]]:
    view = memoryview(data)
    pos = start
    while pos + 4 <= len(view):
        kind = view[pos]
        (length,) = struct.unpack_from(">H", view, pos + 2)
        end = pos + 4 + length
        if end > len(view):
            raise ProtocolError(f"item 0x{kind:02X} overruns its PDU")
        yield kind, view[pos + 4 : end]
        pos = end
    if pos != len(view):
        raise ProtocolError("trailing bytes after the last item")


@dataclass(slots=True)
class _UserInfo:
    max_pdu: int = 0
    class_uid: str = ""
    version: str = ""


def _user_info(body: memoryview) -> _UserInfo:
    info = _UserInfo()
    for kind, sub in _items(body, 0):
        if kind == 0x51 and len(sub) == 4:
            (info.max_pdu,) = struct.unpack(">I", sub)
        elif kind == 0x52:
            info.class_uid = _ascii(bytes(sub))
        elif kind == 0x55:
            info.version = _ascii(bytes(sub))
        # Role selection, asynchronous operations, user identity and extended negotiation
        # need no answer from a storage acceptor: leaving them out keeps the defaults.
    return info


def _associate_fixed(body: bytes | bytearray, kind: str) -> tuple[int, str, str]:
    if len(body) < 68:
        raise ProtocolError(f"{kind} too short ({len(body)} bytes)")
    (version,) = struct.unpack_from(">H", body, 0)
    return version, _ascii(body[4:20]), _ascii(body[20:36])


def decode_associate_rq(body: bytes | bytearray) -> AssociateRequest:
    version, called, calling = _associate_fixed(body, "A-ASSOCIATE-RQ")
    app = ""
    contexts: list[ProposedContext] = []
    info = _UserInfo()
    for kind, item in _items(body, 68):
        if kind == 0x10:
            app = _ascii(bytes(item))
        elif kind == 0x20:
            if len(item) < 4:
                raise ProtocolError("presentation context item too short")
            abstract = ""
            syntaxes: list[str] = []
            for sub_kind, sub in _items(item, 4):
                if sub_kind == 0x30:
                    abstract = _ascii(bytes(sub))
                elif sub_kind == 0x40:
                    syntaxes.append(_ascii(bytes(sub)))
            contexts.append(
                ProposedContext(
                    context_id=item[0], abstract_syntax=abstract, transfer_syntaxes=tuple(syntaxes)
                )
            )
        elif kind == 0x50:
            info = _user_info(item)
    return AssociateRequest(
        called_ae=called,
        calling_ae=calling,
        contexts=tuple(contexts),
        max_pdu=info.max_pdu,
        implementation_class_uid=info.class_uid,
        implementation_version=info.version,
        application_context=app,
        protocol_version=version,
    )


def decode_associate_ac(body: bytes | bytearray) -> AssociateAccept:
    _, called, calling = _associate_fixed(body, "A-ASSOCIATE-AC")
    results: list[ContextResult] = []
    info = _UserInfo()
    for kind, item in _items(body, 68):
        if kind == 0x21:
            if len(item) < 4:
                raise ProtocolError("presentation context result item too short")
            ts = ""
            for sub_kind, sub in _items(item, 4):
                if sub_kind == 0x40:
                    ts = _ascii(bytes(sub))
            results.append(ContextResult(context_id=item[0], result=item[2], transfer_syntax=ts))
        elif kind == 0x50:
            info = _user_info(item)
    return AssociateAccept(
        called_ae=called,
        calling_ae=calling,
        results=tuple(results),
        max_pdu=info.max_pdu,
        implementation_class_uid=info.class_uid,
        implementation_version=info.version,
    )


def decode_associate_rj(body: bytes | bytearray) -> AssociateReject:
    if len(body) < 4:
        raise ProtocolError("A-ASSOCIATE-RJ too short")
    return AssociateReject(result=body[1], source=body[2], reason=body[3])


# -- reading PDUs -----------------------------------------------------------------------------


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    """size bytes from sock; ProtocolError when the peer closes or the socket times out."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    try:
        while got < size:
            n = sock.recv_into(view[got:], size - got)
            if not n:
                raise ProtocolError("the peer closed the connection")
            got += n
    except TimeoutError:
        raise ProtocolError("no data from the peer within the timeout") from None
    except OSError as exc:
        raise ProtocolError(f"connection failed: {exc.strerror or exc}") from None
    return buf


def read_pdu(sock: socket.socket) -> tuple[int, bytearray]:
    """The next PDU's type and body."""
    header = recv_exact(sock, 6)
    kind = header[0]
    (length,) = struct.unpack_from(">I", header, 2)
    if kind not in range(A_ASSOCIATE_RQ, A_ABORT + 1):
        raise ProtocolError(f"unknown PDU type 0x{kind:02X}")
    if length > MAX_SANE_PDU:
        raise ProtocolError(f"PDU length {length} is not plausible")
    return kind, recv_exact(sock, length)


@dataclass(frozen=True, slots=True)
class Pdv:
    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview


def pdvs(body: bytearray) -> Iterator[Pdv]:
    """The presentation data values of one P-DATA-TF body."""
    view = memoryview(body)
    pos = 0
    while pos < len(view):
        if pos + 6 > len(view):
            raise ProtocolError("truncated PDV item")
        (length,) = struct.unpack_from(">I", view, pos)
        if length < 2 or pos + 4 + length > len(view):
            raise ProtocolError(f"PDV length {length} does not fit its PDU")
        control = view[pos + 5]
        yield Pdv(
            view[pos + 4], bool(control & 1), bool(control & 2), view[pos + 6 : pos + 4 + length]
        )
        pos += 4 + length


def pdv_header(length: int, context_id: int, *, command: bool, last: bool) -> bytes:
    """PDU header and PDV item header for one fragment of `length` bytes, alone in its PDU."""
    control = (1 if command else 0) | (2 if last else 0)
    return struct.pack(">BBIIBB", P_DATA_TF, 0, length + 6, length + 2, context_id, control)


def fragment_size(peer_max_pdu: int) -> int:
    """Bytes of a message per PDU: the peer's limit less the 6-byte PDV item header, even."""
    if peer_max_pdu <= 0:
        return 1 << 20  # unlimited: 1 MiB fragments bound the memory a send holds
    return max(2, (peer_max_pdu - 6) & ~1)


# -- command sets (PS3.7 9.3, 9.1 Implicit VR Little Endian) ----------------------------------


def _even(raw: bytes, pad: bytes) -> bytes:
    return raw + pad if len(raw) % 2 else raw


def encode_command(fields: Mapping[int, int | str]) -> bytes:
    """A group 0000 command set: element numbers to US values or UI/AE/LO strings."""
    body = bytearray()
    for elem in sorted(fields):
        value = fields[elem]
        if isinstance(value, int):
            raw = struct.pack("<H", value)
        elif elem in (0x0002, 0x0003, 0x1000, 0x1001):
            raw = _even(value.encode("ascii"), b"\0")
        else:
            raw = _even(value.encode("ascii", "replace"), b" ")
        body += struct.pack("<HHI", 0, elem, len(raw)) + raw
    return struct.pack("<HHII", 0, 0, 4, len(body)) + bytes(body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    fields: dict[int, bytes] = field(default_factory=dict)

    def us(self, elem: int, default: int | None = None) -> int | None:
        raw = self.fields.get(elem)
        return struct.unpack("<H", raw[:2])[0] if raw is not None and len(raw) >= 2 else default

    def text(self, elem: int) -> str:
        raw = self.fields.get(elem)
        return _ascii(raw) if raw is not None else ""

    @property
    def command_field(self) -> int | None:
        return self.us(0x0100)

    @property
    def has_dataset(self) -> bool:
        return self.us(0x0800, NO_DATASET) != NO_DATASET


def decode_command(data: bytes | bytearray) -> Command:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        if group != 0 or pos + 8 + length > len(data):
            raise ProtocolError("malformed command set")
        fields[elem] = bytes(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    if pos != len(data):
        raise ProtocolError("malformed command set")
    return Command(fields=fields)


def store_request(msg_id: int, sop_class: str, sop_uid: str) -> bytes:
    return encode_command(
        {
            0x0002: sop_class,
            0x0100: C_STORE_RQ,
            0x0110: msg_id,
            0x0700: 0,
            0x0800: 0x0000,
            0x1000: sop_uid,
        }
    )


def response_to(request: Command, status: int, comment: str = "") -> bytes:
    """The response to a request command: same class and instance, its message ID."""
    fields: dict[int, int | str] = {
        0x0100: (request.command_field or 0) | 0x8000,
        0x0120: request.us(0x0110, 0) or 0,
        0x0800: NO_DATASET,
        0x0900: status,
    }
    if 0x0002 in request.fields:
        fields[0x0002] = request.text(0x0002)
    if 0x1000 in request.fields:
        fields[0x1000] = request.text(0x1000)
    if comment:
        fields[0x0902] = comment[:64]
    return encode_command(fields)
