"""C-STORE (PS3.4 Annex B): send Part 10 files to the destination."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import _config

from pacsmig.dicomnet.ae import Peer, associate
from pacsmig.dicomnet.contexts import UNCOMPRESSED_ALL, send_contexts
from pacsmig.dicomnet.status import StoreOutcome, classify_store
from pacsmig.errors import PacsError

# Send files as their encoded bytes, in chunks: nothing is decoded that needs no change.
_config.STORE_SEND_CHUNKED_DATASET = True

_LOST = "no response: the association was lost"


class DestinationUnavailable(PacsError):
    """The destination kept failing transiently (circuit breaker): the run stops, sent is kept."""


class StoreSession:
    """An association to the destination carrying C-STORE requests."""

    def __init__(self, assoc: Any, peer: Peer) -> None:
        self._assoc = assoc
        self._peer = peer
        self._msg_id = 0
        self._accepted: dict[tuple[str, str], Any] = {}
        self._classes: set[str] = set()
        for cx in assoc.accepted_contexts:
            self._accepted[(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))] = cx
            self._classes.add(str(cx.abstract_syntax))

    @property
    def is_established(self) -> bool:
        return bool(self._assoc.is_established)

    def _next_id(self) -> int:
        self._msg_id = self._msg_id % 65535 + 1
        return self._msg_id

    def send_file(self, path: Path, sop_class: str, transfer_syntax: str) -> StoreOutcome:
        """Send one file; a refused context is a failure outcome, never an exception."""
        if not self._assoc.is_established:
            return StoreOutcome(category="in_doubt", code=None, comment=_LOST)
        if (sop_class, transfer_syntax) in self._accepted:
            return self._send(path)
        if sop_class not in self._classes:
            return StoreOutcome(
                category="failure",
                code=None,
                comment=f"unsupported_by_destination: SOP class {sop_class} not accepted",
            )
        return self._send_converted(path, sop_class, transfer_syntax)

    def _send_converted(self, path: Path, sop_class: str, transfer_syntax: str) -> StoreOutcome:
        # The destination refused the instance's own syntax but accepts an uncompressed one
        # for its SOP class: decode (and decompress where needed) and let pynetdicom encode.
        try:
            ds = dcmread(path)
            if UID(transfer_syntax) not in UNCOMPRESSED_ALL:
                # pydicom 3 mints a new SOP Instance UID by default: the instance must keep its own.
                ds.decompress(generate_instance_uid=False)
            else:
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        except Exception as exc:
            return StoreOutcome(
                category="failure",
                code=None,
                comment=(
                    "unsupported_by_destination: transfer syntax "
                    f"{transfer_syntax} refused and cannot be decoded ({type(exc).__name__})"
                ),
            )
        return self._send(ds)

    def _send(self, what: Path | Any) -> StoreOutcome:
        try:
            status = self._assoc.send_c_store(what, msg_id=self._next_id())
        except RuntimeError:
            # The peer aborted between the check above and the request: pynetdicom raises
            # here where a moment later it would return an empty status. Same answer as that
            # (in doubt), so the caller re-associates instead of the run crashing.
            if self._assoc.is_established:
                raise
            return StoreOutcome(category="in_doubt", code=None, comment=_LOST)
        return self._outcome(status)

    def _outcome(self, status: Any) -> StoreOutcome:
        code = getattr(status, "Status", None)
        comment = str(status.get("ErrorComment", "") or "") if code is not None else ""
        if code is None:
            return classify_store(None, "no response: timeout or aborted association")
        return classify_store(int(code), comment)


@contextlib.contextmanager
def open_store(
    calling_ae_title: str, peer: Peer, pairs: Iterable[tuple[str, str]]
) -> Iterator[StoreSession]:
    """Associate with contexts for these (SOP class, transfer syntax) pairs."""
    with associate(calling_ae_title, peer, send_contexts(pairs)) as assoc:
        yield StoreSession(assoc, peer)
