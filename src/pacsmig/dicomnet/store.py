"""C-STORE (PS3.4 Annex B): send Part 10 files to the destination."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pynetdicom import _config

from pacsmig.apply.transcode import TranscodeError, syntax_candidates, transcode, wanted_syntaxes
from pacsmig.dicomnet import wire
from pacsmig.dicomnet.ae import Peer, associate, wire_associate
from pacsmig.dicomnet.contexts import UNCOMPRESSED, send_contexts
from pacsmig.dicomnet.status import StoreOutcome, classify_store
from pacsmig.errors import PacsError
from pacsmig.spec.model import LossyPolicy

# Send files as their encoded bytes, in chunks: nothing is decoded that needs no change.
_config.STORE_SEND_CHUNKED_DATASET = True

_LOST = "no response: the association was lost"


class DestinationUnavailable(PacsError):
    """The destination kept failing transiently (circuit breaker): the run stops, sent is kept."""


class StoreSession:
    """An association to the destination carrying C-STORE requests.

    `preferred` and `lossy` are the destination's transfer syntax wishes from the spec
    (``Destination.syntaxes`` and ``Destination.lossy``); see
    ``pacsmig.apply.transcode.choose_syntax`` for how each instance's syntax is chosen.
    """

    def __init__(
        self,
        transport: _Transport,
        peer: Peer,
        *,
        preferred: Sequence[str] = (),
        lossy: LossyPolicy | None = None,
    ) -> None:
        self._transport = transport
        self._peer = peer
        self._preferred = tuple(str(ts) for ts in preferred)
        self._lossy = lossy
        self._syntaxes: dict[str, list[str]] = {}
        for sop_class, ts in transport.accepted():
            accepted = self._syntaxes.setdefault(sop_class, [])
            if ts not in accepted:
                accepted.append(ts)

    @property
    def is_established(self) -> bool:
        return self._transport.is_established()

    def accepted_syntaxes(self, sop_class: str) -> tuple[str, ...]:
        """The transfer syntaxes the destination accepted for this SOP class."""
        return tuple(self._syntaxes.get(sop_class, ()))

    def send_file(self, path: Path, sop_class: str, transfer_syntax: str) -> StoreOutcome:
        """Send one file, converted where the destination or the spec asks for it.

        The file goes as its own bytes when its syntax was accepted and neither a preferred
        syntax nor the lossy policy asks for another; otherwise it is transcoded in memory
        (same SOP Instance UID) into the first accepted syntax its pixels fit. The outcome's
        `sent_syntax` says which. A refused class or syntax, or pixels that cannot be
        converted, are failure outcomes, never exceptions.
        """
        if not self._transport.is_established():
            return StoreOutcome(category="in_doubt", code=None, comment=_LOST)
        accepted = self._syntaxes.get(sop_class)
        if not accepted:
            return StoreOutcome(
                category="failure",
                code=None,
                comment=f"unsupported_by_destination: SOP class {sop_class} not accepted",
            )
        stored = str(transfer_syntax)
        candidates = syntax_candidates(
            stored, accepted, preferred=self._preferred, lossy=self._lossy
        )
        if not candidates:
            return StoreOutcome(
                category="failure",
                code=None,
                comment=(
                    f"unsupported_by_destination: transfer syntax {stored} refused and not "
                    f"convertible to one the destination accepts ({', '.join(accepted)})"
                ),
            )
        if candidates[0] == stored:
            return self._send(path, sop_class, stored)
        return self._send_converted(path, sop_class, stored, candidates)

    def _send_converted(
        self, path: Path, sop_class: str, stored: str, candidates: list[str]
    ) -> StoreOutcome:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return StoreOutcome(
                category="failure",
                code=None,
                comment=f"transcode_failed: cannot read the spooled file ({exc.strerror})",
            )
        problems: list[str] = []
        for ts in candidates:
            if ts == stored:
                # The conversions the spec asked for do not fit these pixels; the stored
                # syntax is accepted, so the instance goes as it is.
                return self._send(path, sop_class, stored)
            try:
                converted = transcode(data, ts, lossy=self._lossy)
            except TranscodeError as exc:
                problems.append(str(exc))
                continue
            try:
                return self._send(converted, sop_class, ts)
            except (ValueError, AttributeError) as exc:
                # pynetdicom could not encode the converted data set for the wire.
                problems.append(f"{ts}: cannot be sent ({type(exc).__name__})")
        return StoreOutcome(
            category="failure",
            code=None,
            comment=f"transcode_failed: {stored} -> {', '.join(candidates)}: {'; '.join(problems)}",
        )

    def _send(self, what: Path | bytes, sop_class: str, syntax: str) -> StoreOutcome:
        outcome = self._transport.send(what, sop_class, syntax)
        return dataclasses.replace(outcome, sent_syntax=syntax)


class _Transport(Protocol):
    def accepted(self) -> Iterable[tuple[str, str]]: ...
    def is_established(self) -> bool: ...
    def send(self, what: Path | bytes, sop_class: str, syntax: str) -> StoreOutcome: ...


def _outcome(code: int | None, comment: str) -> StoreOutcome:
    if code is None:
        return classify_store(None, f"no response: {comment or 'timeout or aborted association'}")
    return classify_store(code, comment)


class _WireTransport:
    """pacsmig's own C-STORE path (``wire.py``)."""

    def __init__(self, assoc: wire.WireAssociation) -> None:
        self._assoc = assoc

    def accepted(self) -> Iterable[tuple[str, str]]:
        return [(sop_class, ts) for _, sop_class, ts in self._assoc.accepted]

    def is_established(self) -> bool:
        return self._assoc.established

    def send(self, what: Path | bytes, sop_class: str, syntax: str) -> StoreOutcome:
        answer = self._assoc.store(what, sop_class, syntax)
        if answer.status is None and self._assoc.established:
            # Refused locally before anything was sent (not Part 10, no context).
            return StoreOutcome(category="failure", code=None, comment=answer.comment)
        return _outcome(answer.status, answer.comment.removeprefix("no response: "))


class _PynetdicomTransport:
    """The same through pynetdicom (``PACSMIG_WIRE=pynetdicom``)."""

    def __init__(self, assoc: Any) -> None:
        self._assoc = assoc
        self._msg_id = 0

    def accepted(self) -> Iterable[tuple[str, str]]:
        return [
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in self._assoc.accepted_contexts
        ]

    def is_established(self) -> bool:
        return bool(self._assoc.is_established)

    def send(self, what: Path | bytes, sop_class: str, syntax: str) -> StoreOutcome:
        # A Dataset read from transcoded bytes is still raw: pynetdicom writes its elements
        # back as those bytes, in the context of the syntax its File Meta names.
        payload = dcmread(io.BytesIO(what)) if isinstance(what, bytes) else what
        self._msg_id = self._msg_id % 65535 + 1
        try:
            status = self._assoc.send_c_store(payload, msg_id=self._msg_id)
        except RuntimeError:
            # The peer aborted between the check above and the request: pynetdicom raises
            # here where a moment later it would return an empty status. Same answer as that
            # (in doubt), so the caller re-associates instead of the run crashing.
            if self._assoc.is_established:
                raise
            return StoreOutcome(category="in_doubt", code=None, comment=_LOST)
        code = getattr(status, "Status", None)
        comment = str(status.get("ErrorComment", "") or "") if code is not None else ""
        return _outcome(None if code is None else int(code), comment)


@contextlib.contextmanager
def open_store(
    calling_ae_title: str,
    peer: Peer,
    pairs: Iterable[tuple[str, str]],
    *,
    syntaxes: Sequence[str] = (),
    lossy: LossyPolicy | None = None,
) -> Iterator[StoreSession]:
    """Associate with contexts for these (SOP class, transfer syntax) pairs.

    Besides each pair and an uncompressed context per class, every syntax an instance of the
    class could be converted to (the destination's preferred `syntaxes`, the `lossy` policy's
    syntax, the lossless ones pacsmig can encode) is proposed in a context of its own, as far
    as the association has room.
    """
    pairs = sorted({(str(c), str(ts)) for c, ts in pairs})
    extra: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        wanted = extra.setdefault(sop_class, [])
        for candidate in wanted_syntaxes(ts, preferred=syntaxes, lossy=lossy):
            if candidate != ts and candidate not in UNCOMPRESSED and candidate not in wanted:
                wanted.append(candidate)
    contexts = send_contexts(pairs, extra=extra)
    if not wire.enabled():
        with associate(calling_ae_title, peer, contexts) as assoc:
            yield StoreSession(_PynetdicomTransport(assoc), peer, preferred=syntaxes, lossy=lossy)
        return
    proposed = [
        (str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax]) for cx in contexts
    ]
    with wire_associate(calling_ae_title, peer, proposed) as wired:
        yield StoreSession(_WireTransport(wired), peer, preferred=syntaxes, lossy=lossy)
