"""Workarounds for pynetdicom 3.0 behaviour measured on this machine (../shared/PYNETDICOM.md).

Kept in one place so an upgrade that fixes them upstream can drop them; tests in
tests/network/test_patches.py reproduce each problem without its patch.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

_applied = False
_original_socket_init = AssociationSocket.__init__
_original_serve_request = Association._serve_request


def _socket_init(self: AssociationSocket, *args: Any, **kwargs: Any) -> None:
    _original_socket_init(self, *args, **kwargs)
    set_nodelay(self.socket)


def set_nodelay(sock: socket.socket | None) -> None:
    # Without TCP_NODELAY each C-STORE/C-FIND round trip waits 40-90 ms on a delayed ACK.
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket (tests may hand in socketpairs)
        pass


def _serve_request(self: Association, msg: Any, context_id: int) -> None:
    # pynetdicom's reactor can take a response meant for a send_*() caller that is about to
    # block on the queue (pydicom/pynetdicom#875) and drop it as "unexpected": the caller
    # then stalls for the full DIMSE timeout and aborts. Hand such a response back.
    if msg is not None and msg.is_valid_response and not msg.is_valid_request:
        self.dimse.msg_queue.put((context_id, msg))
        return
    _original_serve_request(self, msg, context_id)


def apply() -> None:
    global _applied
    if _applied:
        return
    AssociationSocket.__init__ = _socket_init  # type: ignore[method-assign]
    Association._serve_request = _serve_request  # type: ignore[method-assign]
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
    _applied = False
