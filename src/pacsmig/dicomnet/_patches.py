"""Workarounds for pynetdicom 3.0 behaviour measured on this machine (../shared/PYNETDICOM.md).

Kept in one place so an upgrade that fixes them upstream can drop them; tests in
tests/network/test_patches.py reproduce each problem without its patch.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any

from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

_applied = False
_original_socket_init = AssociationSocket.__init__
_original_serve_request = Association._serve_request
_original_assoc_init = Association.__init__


class ReactorCheckpoint:
    """A drop-in for the reactor's threading.Event that knows when the reactor has *passed* it.

    pynetdicom's send_*() methods clear the checkpoint, then spin until `_is_paused` is true.
    The reactor sets `_is_paused = True`, waits on the checkpoint, and only then sets it false:
    for a moment after wait() returns it reads as paused while it is about to call
    dimse.get_msg() and take the caller's response (pydicom/pynetdicom#875). This checkpoint
    records, under its lock, that wait() returned; `_is_paused` then reads false until the
    reactor next declares itself paused, so the caller keeps spinning instead of racing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._flag = True
        self.passed = False

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            result = self._cond.wait_for(lambda: self._flag, timeout)
            if result:
                self.passed = True
            return bool(result)


def _get_paused(self: Association) -> bool:
    raw = bool(self.__dict__.get("_pacsmig_paused", False))
    checkpoint = self.__dict__.get("_reactor_checkpoint")
    if isinstance(checkpoint, ReactorCheckpoint) and checkpoint.passed:
        return False
    return raw


def _set_paused(self: Association, value: bool) -> None:
    checkpoint = self.__dict__.get("_reactor_checkpoint")
    if value and isinstance(checkpoint, ReactorCheckpoint):
        with checkpoint._cond:
            checkpoint.passed = False
            self.__dict__["_pacsmig_paused"] = True
        return
    self.__dict__["_pacsmig_paused"] = bool(value)


def _assoc_init(self: Association, *args: Any, **kwargs: Any) -> None:
    _original_assoc_init(self, *args, **kwargs)
    self._reactor_checkpoint = ReactorCheckpoint()  # type: ignore[assignment]


def _socket_init(self: AssociationSocket, *args: Any, **kwargs: Any) -> None:
    _original_socket_init(self, *args, **kwargs)
    set_nodelay(self.socket)


def set_nodelay(sock: socket.socket | None) -> None:
    # Without TCP_NODELAY each C-STORE/C-FIND round trip waits 40-90 ms on a delayed ACK.
    if sock is None:
        return
    with contextlib.suppress(OSError):  # not a TCP socket (tests may hand in socketpairs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _serve_request(self: Association, msg: Any, context_id: int) -> None:
    # pynetdicom's reactor can take a response meant for a send_*() caller that is about to
    # block on the queue (pydicom/pynetdicom#875) and drop it as "unexpected": the caller
    # then stalls for the full DIMSE timeout and aborts. Hand such a response back.
    # Belt and braces behind ReactorCheckpoint: should a response still reach the reactor,
    # return it to the *front* of the queue, where it was, so pending C-FIND answers keep
    # their order (re-queued at the back, the final status could overtake one and drop it).
    if msg is not None and msg.is_valid_response and not msg.is_valid_request:
        queue = self.dimse.msg_queue
        with queue.mutex:
            queue.queue.appendleft((context_id, msg))
            queue.unfinished_tasks += 1
            queue.not_empty.notify()
        log.debug("returned a %s response taken by the reactor", msg.msg_type)
        return
    _original_serve_request(self, msg, context_id)


def _context_deepcopy(self: PresentationContext, memo: dict[int, Any]) -> PresentationContext:
    """A presentation context copied field by field.

    pynetdicom deep-copies the server's supported contexts for every association it accepts;
    a Storage SCP supports every storage class in many syntaxes (thousands of contexts), and
    the generic deepcopy of each spent ~0.8 s of CPU per incoming association (one per C-MOVE
    from Orthanc), measured with yappi. The fields are UIDs (immutable str), bools and ints,
    plus one list, which is copied.
    """
    clone = PresentationContext.__new__(PresentationContext)
    clone.__dict__.update(self.__dict__)
    clone._transfer_syntax = list(self._transfer_syntax)
    return clone


def apply() -> None:
    global _applied
    if _applied:
        return
    PresentationContext.__deepcopy__ = _context_deepcopy  # type: ignore[attr-defined]
    AssociationSocket.__init__ = _socket_init  # type: ignore[method-assign]
    Association._serve_request = _serve_request  # type: ignore[method-assign]
    Association.__init__ = _assoc_init  # type: ignore[method-assign]
    # A property on the class turns the reactor's plain flag writes into _set_paused calls.
    setattr(Association, "_is_paused", property(_get_paused, _set_paused))  # noqa: B010
    # Identifiers of C-FIND/C-GET/C-MOVE hold patient names and IDs: never log them.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # pynetdicom logs every association and DIMSE message at INFO; keep it quiet unless the
    # user asks for debug output.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    _applied = True


def remove() -> None:
    """Undo the patches (tests that demonstrate the upstream problem use this)."""
    global _applied
    AssociationSocket.__init__ = _original_socket_init  # type: ignore[method-assign]
    Association._serve_request = _original_serve_request  # type: ignore[method-assign]
    Association.__init__ = _original_assoc_init  # type: ignore[method-assign]
    if "__deepcopy__" in PresentationContext.__dict__:
        delattr(PresentationContext, "__deepcopy__")  # noqa: B043
    if isinstance(Association.__dict__.get("_is_paused"), property):
        delattr(Association, "_is_paused")  # noqa: B043
    _applied = False
