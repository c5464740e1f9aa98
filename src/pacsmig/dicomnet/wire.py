"""C-STORE on the wire, without pynetdicom: the sender and pacsmig's C-MOVE destination.

Every instance of a relay crosses these two paths, and through pynetdicom each cost 2-3 ms
of CPU (PDU objects, a state machine, a polling reactor thread, pydicom command sets): the
relay was CPU-bound in pacsmig while the PACS at either end idled. Here a C-STORE is a
command set built from bytes, the file's data set sent in fragments as read, and the answer
parsed from a dozen bytes; a received instance is joined from its fragments and handed on.

Only the C-STORE and C-ECHO services are spoken here. Associations that need anything else
(storage commitment reports, callers the SCP does not serve) are handed to pynetdicom, and
``PACSMIG_WIRE=pynetdicom`` in the environment puts both paths back on pynetdicom (an escape
hatch for a peer this code does not get along with).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pacsmig import __version__
from pacsmig.dicomnet import pdu
from pacsmig.dicomnet.pdu import ProtocolError

log = logging.getLogger(__name__)

# pacsmig's own (a UUID-derived UID, PS3.5 B.2): peers that key workarounds on pynetdicom's
# must not apply them to code that is not pynetdicom.
IMPLEMENTATION_CLASS_UID = "2.25.220143389145406094617163036271312045657"
IMPLEMENTATION_VERSION = f"PACSMIG_{__version__}"[:16]

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})  # fmt: skip


def enabled() -> bool:
    """False when the environment asks for pynetdicom on the C-STORE paths too."""
    return os.environ.get("PACSMIG_WIRE", "").strip().lower() != "pynetdicom"


def nodelay(sock: socket.socket) -> None:
    # Nagle plus the peer's delayed ACK stalls each request-response exchange 40-90 ms.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- Part 10 files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Part10:
    """Where a Part 10 file's data set starts, and what its File Meta says."""

    offset: int
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str


def parse_part10(head: bytes) -> Part10 | None:
    """The File Meta of a Part 10 file from its first bytes; None when it is not one that
    can be parsed here (no preamble, or a File Meta longer than `head`)."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    values: dict[int, str] = {}
    pos = 132
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4 : pos + 6]
        if not vr.isalpha():
            return None  # File Meta not in Explicit VR: leave it to pydicom
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if start + length > len(head):
            return None
        if elem in (0x0002, 0x0003, 0x0010):
            values[elem] = head[start : start + length].decode("ascii", "replace").rstrip("\0 ")
        pos = start + length
    else:
        return None  # the File Meta did not end within `head`
    if not all(values.get(e) for e in (0x0002, 0x0003, 0x0010)):
        return None
    return Part10(
        offset=pos,
        sop_class_uid=values[0x0002],
        sop_uid=values[0x0003],
        transfer_syntax=values[0x0010],
    )


def normalised_part10(path: Path, transfer_syntax: str) -> bytes:
    """A file whose File Meta cannot be parsed here, rewritten by pydicom as Part 10."""
    from pydicom import dcmread
    from pydicom.dataset import FileMetaDataset

    ds = dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.TransferSyntaxUID = meta.get("TransferSyntaxUID") or transfer_syntax
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


_HEAD = 64 * 1024
DEFLATED = "1.2.840.10008.1.2.1.99"


# -- the sender (association requestor) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreAnswer:
    """A C-STORE's answer: the status, or None with why there was none."""

    status: int | None
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FindAnswer:
    """One C-FIND response: its status (None: no answer, `comment` says why) and identifier."""

    status: int | None
    comment: str = ""
    identifier: bytes | None = None


C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010


class Rejected(Exception):
    def __init__(self, reject: pdu.AssociateReject) -> None:
        super().__init__(f"rejected: {reject}")
        self.reject = reject


class NotAssociated(Exception):
    """The peer took the connection but did not answer the association request properly."""


# (SOP class, SOP Instance UID, transfer syntax, data set bytes) -> the status to answer
StoreHandler = Callable[[str, str, str, bytes], int]


class WireAssociation:
    """One association as a Storage or Find SCU, over a connected (perhaps TLS) socket."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        calling: str,
        called: str,
        contexts: Sequence[tuple[str, Sequence[str]]],
        max_pdu: int = 0,
        scp_roles: Sequence[str] = (),
    ) -> None:
        """contexts: (abstract syntax, transfer syntaxes) in proposal order, at most 128;
        scp_roles: SOP classes for which pacsmig offers to take C-STOREs (C-GET)."""
        self._sock = sock
        self._msg_id = 0
        proposed = tuple(
            pdu.ProposedContext(
                context_id=2 * n + 1, abstract_syntax=abstract, transfer_syntaxes=tuple(syntaxes)
            )
            for n, (abstract, syntaxes) in enumerate(contexts)
        )
        request = pdu.AssociateRequest(
            called_ae=called,
            calling_ae=calling,
            contexts=proposed,
            max_pdu=max_pdu,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version=IMPLEMENTATION_VERSION,
            scp_roles=tuple(scp_roles),
        )
        self.established = False
        try:
            sock.sendall(pdu.encode_associate_rq(request))
            kind, body = pdu.read_pdu(sock)
        except (ProtocolError, OSError) as exc:
            raise NotAssociated(str(exc)) from None
        if kind == pdu.A_ASSOCIATE_RJ:
            raise Rejected(pdu.decode_associate_rj(body))
        if kind != pdu.A_ASSOCIATE_AC:
            raise NotAssociated(f"answered the association request with PDU type 0x{kind:02X}")
        try:
            accept = pdu.decode_associate_ac(body)
        except ProtocolError as exc:
            raise NotAssociated(str(exc)) from None
        abstracts = {cx.context_id: cx.abstract_syntax for cx in proposed}
        self.accepted: list[tuple[int, str, str]] = []  # (context ID, SOP class, syntax)
        self.refused: list[str] = []
        for result in accept.results:
            abstract = abstracts.get(result.context_id)
            if abstract is None:
                continue
            if result.result == pdu.ACCEPTANCE and result.transfer_syntax:
                self.accepted.append((result.context_id, abstract, result.transfer_syntax))
            else:
                self.refused.append(abstract)
        self._fragment = pdu.fragment_size(accept.max_pdu)
        self.established = True

    def _next_id(self) -> int:
        self._msg_id = self._msg_id % 65535 + 1
        return self._msg_id

    def context_for(self, sop_class: str, syntax: str) -> int | None:
        for cid, abstract, ts in self.accepted:
            if abstract == sop_class and ts == syntax:
                return cid
        return None

    def store(self, source: Path | bytes, sop_class: str, syntax: str) -> StoreAnswer:
        """Send one Part 10 file (a path or its bytes) as its data set's own bytes.

        The caller has chosen `syntax` among the accepted ones and the file is encoded in it.
        """
        cid = self.context_for(sop_class, syntax)
        if cid is None:
            return StoreAnswer(status=None, comment=f"no accepted context for {syntax}")
        with _opened(source) as (stream, size):
            head = stream.read(_HEAD)
            meta = parse_part10(head)
            if meta is None:
                if isinstance(source, bytes):
                    return StoreAnswer(status=None, comment="not a Part 10 file")
                try:
                    data = normalised_part10(source, syntax)
                except Exception as exc:  # pydicom raises many kinds on a damaged file
                    return StoreAnswer(
                        status=None, comment=f"not a readable DICOM file ({type(exc).__name__})"
                    )
                meta = parse_part10(data[:_HEAD])
                if meta is None:
                    return StoreAnswer(status=None, comment="not a Part 10 file")
                return self.store(data, sop_class, syntax)
            stream.seek(meta.offset)
            length = size - meta.offset
            if length % 2 and meta.transfer_syntax == DEFLATED:
                # A deflate stream may end on an odd byte; PDV fragments must be even (DCMTK
                # aborts on "Odd Fragment Length"). A trailing null pads it, as pydicom does
                # when it writes one, and inflating ignores it.
                stream = io.BytesIO(stream.read() + b"\0")
                stream.seek(0)
                length += 1
            return self._exchange(cid, sop_class, meta.sop_uid, stream, length)

    def _exchange(
        self, cid: int, sop_class: str, sop_uid: str, stream: BinaryIO, length: int
    ) -> StoreAnswer:
        if length <= 0:
            return StoreAnswer(status=None, comment="the file holds no data set")
        msg_id = self._next_id()
        command = pdu.store_request(msg_id, sop_class, sop_uid)
        try:
            self._sock.sendall(pdu.pdv_header(len(command), cid, command=True, last=True) + command)
            left = length
            while left > 0:
                chunk = stream.read(min(self._fragment, left))
                if not chunk:
                    raise ProtocolError("the file is shorter than it was")
                left -= len(chunk)
                header = pdu.pdv_header(len(chunk), cid, command=False, last=left <= 0)
                self._sock.sendall(header + chunk)
            return self._answer(msg_id)
        except (ProtocolError, OSError) as exc:
            self.abort()
            return StoreAnswer(status=None, comment=f"no response: {_why(exc)}")

    def _answer(self, msg_id: int) -> StoreAnswer:
        while True:
            _, rsp, _ = self._message()
            if rsp.command_field == pdu.C_STORE_RSP and rsp.us(0x0120) == msg_id:
                status = rsp.us(0x0900)
                if status is None:
                    raise ProtocolError("C-STORE response without a status")
                return StoreAnswer(status=status, comment=rsp.text(0x0902))

    def context_of(self, sop_class: str) -> tuple[int, str] | None:
        """The first accepted context for a SOP class: (context ID, transfer syntax)."""
        for cid, abstract, ts in self.accepted:
            if abstract == sop_class:
                return cid, ts
        return None

    def find(self, cid: int, sop_class: str, identifier: bytes) -> Iterator[FindAnswer]:
        """One C-FIND (PS3.7 9.1.2): every response in order, the final one last."""
        fields: dict[int, int | str] = {0x0002: sop_class, 0x0100: C_FIND_RQ}
        for rsp, data in self.request(cid, fields, identifier, C_FIND_RSP):
            if rsp is None:
                yield FindAnswer(status=None, comment=data.decode() if data else "")
                return
            status = rsp.us(0x0900)
            yield FindAnswer(status=status, comment=rsp.text(0x0902), identifier=data)

    def request(
        self,
        cid: int,
        fields: dict[int, int | str],
        identifier: bytes,
        response: int,
        *,
        on_store: StoreHandler | None = None,
    ) -> Iterator[tuple[pdu.Command | None, bytes | None]]:
        """Send one request with a data set; yield each (response command, data set) until the
        final one. On a failure, one last (None, why) and the association is aborted.

        The request is never cancelled when the caller stops early: the association is
        aborted instead, so no stale answer can be read as the next request's.
        """
        msg_id = self._next_id()
        command = pdu.encode_command({**fields, 0x0110: msg_id, 0x0700: 0, 0x0800: 0x0000})
        done = False
        try:
            self._sock.sendall(pdu.pdv_header(len(command), cid, command=True, last=True) + command)
            for start in range(0, len(identifier), self._fragment):
                chunk = identifier[start : start + self._fragment]
                last = start + self._fragment >= len(identifier)
                self._sock.sendall(
                    pdu.pdv_header(len(chunk), cid, command=False, last=last) + chunk
                )
            while True:
                got_cid, rsp, data = self._message()
                if on_store is not None and rsp.command_field == pdu.C_STORE_RQ:
                    # A C-GET's sub-operation, on this association (PS3.4 C.4.3.1.3).
                    syntax = self._syntax_of(got_cid)
                    stored = (
                        on_store(rsp.text(0x0002), rsp.text(0x1000), syntax, data)
                        if data and syntax
                        else 0xA900  # data set does not match the SOP class: none came
                    )
                    answer = pdu.response_to(rsp, stored)
                    header = pdu.pdv_header(len(answer), got_cid, command=True, last=True)
                    self._sock.sendall(header + answer)
                    continue
                if rsp.command_field != response or rsp.us(0x0120) != msg_id:
                    raise ProtocolError("an answer that is not to this request")
                code = rsp.us(0x0900)
                if code is None:
                    raise ProtocolError("a response without a status")
                done = code not in (0xFF00, 0xFF01)
                yield rsp, data
                if done:
                    return
        except (ProtocolError, OSError) as exc:
            self.abort()
            done = True
            yield None, _why(exc).encode()
        finally:
            if not done and self.established:
                self.abort()

    def _syntax_of(self, cid: int) -> str:
        return next((ts for c, _, ts in self.accepted if c == cid), "")

    def _message(self) -> tuple[int, pdu.Command, bytes | None]:
        """The next whole DIMSE message from the peer: its context, command, and data set if
        it has one."""
        command = bytearray()
        rsp: pdu.Command | None = None
        fragments: list[bytes] = []
        while True:
            kind, body = pdu.read_pdu(self._sock)
            if kind == pdu.A_ABORT:
                self._closed()
                raise ProtocolError("the peer aborted the association")
            if kind == pdu.A_RELEASE_RQ:
                with contextlib.suppress(OSError):
                    self._sock.sendall(pdu.encode_release_rp())
                self._closed()
                raise ProtocolError("the peer released the association")
            if kind != pdu.P_DATA_TF:
                raise ProtocolError(f"unexpected PDU type 0x{kind:02X}")
            for pdv in pdu.pdvs(body):
                if pdv.is_command:
                    command += pdv.data
                    if pdv.is_last:
                        rsp = pdu.decode_command(command)
                        if not rsp.has_dataset:
                            return pdv.context_id, rsp, None
                elif rsp is not None:
                    fragments.append(bytes(pdv.data))
                    if pdv.is_last:
                        return pdv.context_id, rsp, b"".join(fragments)
                else:
                    raise ProtocolError("a data set fragment before its command")

    def release(self) -> None:
        if not self.established:
            return
        try:
            self._sock.sendall(pdu.encode_release_rq())
            while True:
                kind, _ = pdu.read_pdu(self._sock)
                if kind in (pdu.A_RELEASE_RP, pdu.A_ABORT):
                    break
        except (ProtocolError, OSError):
            pass
        self._closed()

    def abort(self) -> None:
        if self.established:
            with contextlib.suppress(OSError):
                self._sock.sendall(pdu.encode_abort())
        self._closed()

    def _closed(self) -> None:
        self.established = False
        with contextlib.suppress(OSError):
            self._sock.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return str(exc)
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    return type(exc).__name__


@contextlib.contextmanager
def _opened(source: Path | bytes) -> Iterator[tuple[BinaryIO, int]]:
    if isinstance(source, bytes):
        yield io.BytesIO(source), len(source)
        return
    with open(source, "rb") as stream:
        yield stream, os.fstat(stream.fileno()).st_size


def connect(
    host: str,
    port: int,
    *,
    connect_timeout: float,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> socket.socket:
    """A connected socket with TCP_NODELAY (and TLS when given); OSError when it fails."""
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    nodelay(sock)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    sock.settimeout(timeout)
    return sock


# -- pacsmig's Storage SCP (association acceptor) ---------------------------------------------

# Gets the connection of a caller this server does not serve (someone else's protocol).
Handoff = Callable[[socket.socket, tuple[str, int]], None]

# 128 contexts with 20 syntaxes each and long UIDs stay well below this.
_MAX_REQUEST = 256 * 1024


class StoreServer:
    """Accepts C-STORE (and C-ECHO) from the allowed calling AE titles on (bind, port).

    A connection from any other caller goes to `handoff` untouched (its bytes are only
    peeked at), so pynetdicom answers it exactly as it would have: a rejection, or a storage
    commitment report.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        bind: str,
        port: int,
        allowed_calling: Iterable[str],
        abstract_syntaxes: Iterable[str],
        syntax_preference: Sequence[str],
        timeout: float,
        on_store: StoreHandler,
        handoff: Handoff | None,
        handed_over: Iterable[str] = (),
        max_pdu: int = 0,
    ) -> None:
        """handed_over: abstract syntaxes whose associations go to `handoff` whoever calls."""
        self.ae_title = ae_title
        self._bind = bind
        self.port = port
        self._allowed = frozenset(a.strip() for a in allowed_calling)
        self._abstracts = frozenset(abstract_syntaxes) | {pdu.VERIFICATION}
        self._preference = tuple(syntax_preference)
        self._timeout = timeout
        self._on_store = on_store
        self._handoff = handoff
        self._handed = frozenset(handed_over)
        self._max_pdu = max_pdu
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._bind, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]  # the one chosen, when asked for port 0
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="pacsmig-scp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                continue
            threading.Thread(
                target=self._serve, args=(conn, addr), name="pacsmig-scp-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        nodelay(conn)
        conn.settimeout(self._timeout)
        try:
            request = self._peek_request(conn)
        except (ProtocolError, OSError):
            conn.close()
            return
        if request is not None and self._handoff is not None and not self._serves(request):
            conn.settimeout(None)
            try:
                self._handoff(conn, addr)
            except Exception:  # the other server must not take this thread down
                log.exception("handing an association over failed")
                conn.close()
            return
        with self._lock:
            self._conns.add(conn)
        try:
            _Acceptor(self, conn).run()
        except (ProtocolError, OSError) as exc:
            log.info("storage association from %s ended: %s", addr[0], _why(exc))
            with contextlib.suppress(OSError):
                conn.sendall(pdu.encode_abort(2, 0))
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _serves(self, request: pdu.AssociateRequest) -> bool:
        """Whether this code answers the request: an allowed caller proposing nothing but
        services spoken here or refused here (a storage commitment report is pynetdicom's,
        even from a destination that shares the source's AE title)."""
        if request.calling_ae not in self._allowed:
            return False
        return not any(cx.abstract_syntax in self._handed for cx in request.contexts)

    def _peek_request(self, conn: socket.socket) -> pdu.AssociateRequest | None:
        """The A-ASSOCIATE-RQ waiting on conn, decoded without reading it off the socket; None
        when the first bytes are not one (the acceptor then answers them)."""
        deadline = time.monotonic() + self._timeout
        wanted = 6
        while True:
            head = conn.recv(wanted, socket.MSG_PEEK)
            if not head:
                raise ProtocolError("closed before the association request")
            if head[0] != pdu.A_ASSOCIATE_RQ:
                return None
            if len(head) >= 6:
                (length,) = struct.unpack_from(">I", head, 2)
                if length > _MAX_REQUEST:
                    return None  # not plausible: let the acceptor refuse it
                wanted = 6 + length
            if len(head) >= wanted:
                try:
                    return pdu.decode_associate_rq(bytes(head[6:]))
                except ProtocolError:
                    return None
            if time.monotonic() > deadline:
                raise ProtocolError("association request incomplete within the timeout")
            time.sleep(0.002)


class _Acceptor:
    """One association's life on pacsmig's Storage SCP."""

    def __init__(self, server: StoreServer, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.syntaxes: dict[int, str] = {}

    def run(self) -> None:
        kind, body = pdu.read_pdu(self.conn)
        if kind != pdu.A_ASSOCIATE_RQ:
            raise ProtocolError(f"expected an association request, got PDU type 0x{kind:02X}")
        request = pdu.decode_associate_rq(body)
        reject = self._reject_reason(request)
        if reject is not None:
            self.conn.sendall(pdu.encode_associate_rj(reject))
            return
        self.conn.sendall(pdu.encode_associate_ac(self._accept(request)))
        self._serve_data()

    def _reject_reason(self, request: pdu.AssociateRequest) -> pdu.AssociateReject | None:
        if not request.protocol_version & 1:
            return pdu.AssociateReject(result=1, source=2, reason=2)
        if request.application_context != pdu.APPLICATION_CONTEXT:
            return pdu.AssociateReject(result=1, source=1, reason=2)
        if request.called_ae != self.server.ae_title.strip():
            return pdu.AssociateReject(result=1, source=1, reason=7)
        if request.calling_ae not in self.server._allowed:
            return pdu.AssociateReject(result=1, source=1, reason=3)
        return None

    def _accept(self, request: pdu.AssociateRequest) -> pdu.AssociateAccept:
        results = []
        for cx in request.contexts:
            chosen = next(
                (ts for ts in self.server._preference if ts in cx.transfer_syntaxes), None
            )
            if cx.abstract_syntax not in self.server._abstracts:
                result = pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED
            elif chosen is None:
                result = pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED
            else:
                result = pdu.ACCEPTANCE
                self.syntaxes[cx.context_id] = chosen
            # A refused context echoes a proposed syntax: the field must hold one.
            first = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
            results.append(
                pdu.ContextResult(
                    context_id=cx.context_id,
                    result=result,
                    transfer_syntax=chosen if result == pdu.ACCEPTANCE and chosen else first,
                )
            )
        return pdu.AssociateAccept(
            called_ae=request.called_ae,
            calling_ae=request.calling_ae,
            results=tuple(results),
            max_pdu=self.server._max_pdu,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version=IMPLEMENTATION_VERSION,
        )

    def _serve_data(self) -> None:
        command_buf = bytearray()
        request: pdu.Command | None = None
        request_cid = 0
        fragments: list[bytes] = []
        while True:
            kind, body = pdu.read_pdu(self.conn)
            if kind == pdu.A_RELEASE_RQ:
                self.conn.sendall(pdu.encode_release_rp())
                return
            if kind == pdu.A_ABORT:
                return
            if kind != pdu.P_DATA_TF:
                raise ProtocolError(f"unexpected PDU type 0x{kind:02X} during the association")
            for pdv in pdu.pdvs(body):
                if pdv.context_id not in self.syntaxes:
                    raise ProtocolError(f"data on presentation context {pdv.context_id}")
                if pdv.is_command:
                    command_buf += pdv.data
                    if not pdv.is_last:
                        continue
                    request, request_cid = pdu.decode_command(command_buf), pdv.context_id
                    command_buf = bytearray()
                    if not request.has_dataset:
                        self._respond(request, request_cid, b"")
                        request = None
                    continue
                if request is None:
                    raise ProtocolError("a data set fragment before its command")
                fragments.append(bytes(pdv.data))
                if pdv.is_last:
                    self._respond(request, request_cid, b"".join(fragments))
                    request, fragments = None, []

    def _respond(self, request: pdu.Command, cid: int, dataset: bytes) -> None:
        kind = request.command_field
        if kind == pdu.C_STORE_RQ and dataset:
            status = self.server._on_store(
                request.text(0x0002), request.text(0x1000), self.syntaxes[cid], dataset
            )
        elif kind == pdu.C_ECHO_RQ:
            status = 0x0000
        else:
            status = 0x0211  # unrecognised operation
        response = pdu.response_to(request, status)
        self.conn.sendall(pdu.pdv_header(len(response), cid, command=True, last=True) + response)
