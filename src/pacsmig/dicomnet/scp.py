"""pacsmig's own Storage SCP: the C-MOVE destination (PS3.4 Annex B).

It also takes Storage Commitment reports (N-EVENT-REPORT, PS3.4 J.3.3) that a destination
sends on an association of its own, and hands them to the commitment registry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from pacsmig.dicomnet import wire
from pacsmig.dicomnet.ae import make_ae
from pacsmig.dicomnet.commitment import STORAGE_COMMITMENT_PUSH, handle_event_report
from pacsmig.dicomnet.contexts import scp_syntax_preference
from pacsmig.dicomnet.received import InstanceSink, store_received, store_to_sink
from pacsmig.dicomnet.tls import TlsConfig, server_context
from pacsmig.errors import PacsError

log = logging.getLogger(__name__)


def _handle_store(
    event: Any, sink_ref: list[InstanceSink | None], reporters: frozenset[str]
) -> int:
    if str(event.assoc.requestor.ae_title) in reporters:
        # Admitted only to report storage commitment: a destination must not feed the spool.
        return 0x0124
    return store_to_sink(event, sink_ref[0])


class StorageSCP:
    """Listens on (bind, port) as ae_title; accepts only the allowed calling AE titles."""

    def __init__(
        self,
        *,
        ae_title: str,
        port: int,
        bind: str = "",
        allowed_calling: list[str],
        timeout: float,
        tls: TlsConfig | None = None,
        commitment_from: list[str] | None = None,
    ) -> None:
        """commitment_from: AE titles (the destination) admitted to send storage commitment
        reports only; their C-STOREs are refused."""
        self._ssl = server_context(tls) if tls is not None else None
        self.ae_title = ae_title
        self.port = port
        self.bind = bind
        self._ae = make_ae(ae_title, timeout)
        self._ae.require_called_aet = True
        # Only the configured source may push into the migration.
        self._reporters = frozenset(commitment_from or ()) - set(allowed_calling)
        self._ae.require_calling_aet = [*allowed_calling, *sorted(self._reporters)]
        self._allowed = list(allowed_calling)
        self._timeout = timeout
        self._syntaxes = scp_syntax_preference(ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            self._ae.add_supported_context(str(cx.abstract_syntax), self._syntaxes)
        self._ae.add_supported_context(Verification)
        # Either role: a reporting peer may propose SCP/SCU role selection or none.
        self._ae.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
        self._sink: list[InstanceSink | None] = [None]
        self._server: Any = None
        self._wire: wire.StoreServer | None = None
        self._lock = threading.Lock()

    def set_sink(self, sink: InstanceSink | None) -> None:
        with self._lock:
            self._sink[0] = sink

    def start(self) -> None:
        """Listen. The source's C-STOREs take pacsmig's own path (``wire.py``); every other
        association (a commitment report, a caller to reject) is pynetdicom's."""
        handlers: list[Any] = [
            (evt.EVT_C_STORE, _handle_store, [self._sink, self._reporters]),
            (evt.EVT_N_EVENT_REPORT, handle_event_report),
        ]
        fast = wire.enabled() and self._ssl is None and bool(self._allowed)
        # With the fast path the pynetdicom server only takes handed-over connections: its
        # own socket listens on an ephemeral loopback port nobody is told about.
        address = ("127.0.0.1", 0) if fast else (self.bind, self.port)
        try:
            self._server = self._ae.start_server(
                address, block=False, evt_handlers=handlers, ssl_context=self._ssl
            )
            if fast:
                self._wire = wire.StoreServer(
                    ae_title=self.ae_title,
                    bind=self.bind,
                    port=self.port,
                    allowed_calling=self._allowed,
                    abstract_syntaxes=[
                        str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
                    ],
                    syntax_preference=self._syntaxes,
                    timeout=self._timeout,
                    on_store=self._store,
                    handoff=self._server.finish_request,
                    handed_over=[STORAGE_COMMITMENT_PUSH],
                )
                self._wire.start()
                self.port = self._wire.port
        except OSError as exc:
            self.stop()
            where = f"{self.bind or '*'}:{self.port}"
            raise PacsError(
                f"pacsmig's Storage SCP cannot listen on {where} (local.port): "
                f"{(exc.strerror or str(exc)).lower()}"
            ) from None

    def _store(self, sop_class: str, sop_uid: str, transfer_syntax: str, dataset: bytes) -> int:
        return store_received(self._sink[0], sop_class, sop_uid, transfer_syntax, dataset)

    def stop(self) -> None:
        if self._wire is not None:
            self._wire.stop()
            self._wire = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._ae.shutdown()

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
