"""Where apply gets a study's instances from: a live PACS (DIMSE) or legacy storage (files).

Both answer the same two questions: which instances does the source hold of a study now, and
fetch these into the spool. The executor does not know which kind it talks to.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pacsmig.apply.spool import StudySpool
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.contexts import storage_class_chunks
from pacsmig.dicomnet.find import open_find
from pacsmig.dicomnet.received import ReceivedInstance
from pacsmig.dicomnet.retrieve import RetrieveRequest, RetrieveResult, c_get, c_move
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.errors import PacsError, PacsmigError
from pacsmig.inventory.dimse import peer_of, tls_config
from pacsmig.inventory.model import InstanceRecord
from pacsmig.spec.model import DimseSource, FilesystemSource, Spec

IMAGE_LEVEL_BATCH = 100


class SourceAccess(Protocol):
    def instances(self, study_uid: str, *, with_class: bool = True) -> list[InstanceRecord]:
        """Every instance the source holds of the study now (SOP classes if with_class)."""
        ...

    def fetch(
        self,
        study_uid: str,
        instances: list[InstanceRecord],
        missing: list[InstanceRecord],
        spool: StudySpool,
    ) -> str:
        """Bring the missing instances into the spool; describe what went wrong, if anything.

        Safe to call from several threads at once, for different studies.
        """
        ...


class _SinkByInstance:
    """pacsmig's one Storage SCP feeds several studies' spools at once (parallel C-MOVEs).

    A C-STORE names its SOP Instance UID; each spool registers the UIDs it waits for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spools: dict[str, StudySpool] = {}

    def add(self, spool: StudySpool) -> None:
        with self._lock:
            for uid in spool.wanted:
                self._spools[uid] = spool

    def remove(self, spool: StudySpool) -> None:
        with self._lock:
            for uid in spool.wanted:
                if self._spools.get(uid) is spool:
                    del self._spools[uid]

    def __call__(self, item: ReceivedInstance) -> bool:
        with self._lock:
            spool = self._spools.get(item.sop_uid)
        if spool is None:
            # Not asked for by any running retrieval (a late or unplanned sub-operation):
            # accept so the peer does not retry, but nothing is sent on.
            return True
        return spool(item)


@contextlib.contextmanager
def open_source(spec: Spec, index_path: Path | None) -> Iterator[SourceAccess]:
    if isinstance(spec.source, FilesystemSource):
        if index_path is None:
            raise PacsmigError("a filesystem source needs its index")
        yield FilesystemAccess(index_path)
        return
    access = DimseAccess(spec, spec.source)
    with access.running():
        yield access


class DimseAccess:
    def __init__(self, spec: Spec, source: DimseSource) -> None:
        self.spec = spec
        self.retrieve = source.retrieve
        self.peer: Peer = peer_of(source, "source")
        self.calling = spec.local.ae_title
        self._scp: StorageSCP | None = None
        self._sink = _SinkByInstance()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """pacsmig's Storage SCP runs for the whole apply when instances come by C-MOVE."""
        if self.retrieve != "c-move":
            yield
            return
        assert self.spec.local.port is not None  # the spec loader requires it for c-move
        scp = StorageSCP(
            ae_title=self.calling,
            port=self.spec.local.port,
            bind=self.spec.local.bind,
            allowed_calling=[self.peer.ae_title],
            # The destination reports storage commitment results to our AE on this port.
            commitment_from=[self.spec.destination.ae_title],
            timeout=self.peer.timeout,
            tls=tls_config(self.spec.local.tls),
        )
        scp.set_sink(self._sink)
        scp.start()
        self._scp = scp
        try:
            yield
        finally:
            scp.stop()
            self._scp = None

    def instances(self, study_uid: str, *, with_class: bool = True) -> list[InstanceRecord]:
        with open_find(self.calling, self.peer) as finder:
            return finder.study_instances(study_uid, with_class=with_class)

    def fetch(
        self,
        study_uid: str,
        instances: list[InstanceRecord],
        missing: list[InstanceRecord],
        spool: StudySpool,
    ) -> str:
        if len(missing) == len(instances):
            requests = [RetrieveRequest(study_uid=study_uid)]
        else:
            requests = image_requests(study_uid, missing)
        classes = sorted({i.sop_class_uid for i in instances if i.sop_class_uid})
        outcomes: list[RetrieveResult] = []
        if self.retrieve == "c-move":
            assert self._scp is not None
            self._sink.add(spool)
            try:
                for request in requests:
                    outcomes.append(c_move(self.calling, self.peer, request, self.calling))
            finally:
                self._sink.remove(spool)
        elif all(i.sop_class_uid for i in instances):
            for request in requests:
                outcomes.append(c_get(self.calling, self.peer, request, classes, spool))
        else:
            # The source did not name SOP classes: offer every storage class, a slice per
            # association, asking each time only for what has not arrived yet.
            for n, chunk in enumerate(storage_class_chunks()):
                if n:
                    remaining = [i for i in missing if i.sop_uid not in spool.received]
                    if not remaining:
                        break
                    requests = image_requests(study_uid, remaining)
                for request in requests:
                    outcomes.append(
                        c_get(self.calling, self.peer, request, chunk, spool, classes_known=False)
                    )
        bad = [o for o in outcomes if o.status not in (0x0000,)]
        return bad[-1].describe() if bad else "retrieved"

    def move_to(self, request: RetrieveRequest, move_ae_title: str) -> RetrieveResult:
        """C-MOVE straight to another AE (the direct route): nothing comes through pacsmig."""
        try:
            return c_move(self.calling, self.peer, request, move_ae_title)
        except PacsError as exc:
            if "does not know the move destination" in str(exc):
                raise PacsError(
                    f"{self.peer.describe()} does not know the move destination "
                    f"{move_ae_title!r} (destination.move_ae): add the destination's AE title, "
                    "host and port to the source's configuration, or remove move_ae to relay"
                ) from None
            raise


class FilesystemAccess:
    """Instances come from the file index built at planning, read and normalised to Part 10."""

    def __init__(self, index_path: Path) -> None:
        self.index_path = index_path

    def instances(self, study_uid: str, *, with_class: bool = True) -> list[InstanceRecord]:
        from pacsmig.inventory.catalog import study_instances

        return [
            InstanceRecord(
                sop_uid=f.sop_uid, series_uid=f.series_uid, sop_class_uid=f.sop_class_uid
            )
            for f in study_instances(self.index_path, study_uid)
        ]

    def fetch(
        self,
        study_uid: str,
        instances: list[InstanceRecord],
        missing: list[InstanceRecord],
        spool: StudySpool,
    ) -> str:
        from pacsmig.inventory.catalog import study_instances
        from pacsmig.inventory.files import normalised_transfer_syntax, read_normalised

        wanted = {i.sop_uid for i in missing}
        problems: list[str] = []
        for f in study_instances(self.index_path, study_uid):
            if f.sop_uid not in wanted:
                continue
            try:
                data = read_normalised(f)
            except (PacsmigError, OSError) as exc:
                problems.append(str(exc))
                continue
            spool(
                ReceivedInstance(
                    sop_uid=f.sop_uid,
                    sop_class_uid=f.sop_class_uid,
                    # Big endian is transcoded on reading: the bytes are not what the file held.
                    transfer_syntax=normalised_transfer_syntax(f),
                    data=data,
                )
            )
        return problems[0] if problems else "read"


def image_requests(study_uid: str, instances: list[InstanceRecord]) -> list[RetrieveRequest]:
    """IMAGE-level requests for some instances: a list of UIDs per series (PS3.4 C.4.2.2.1)."""
    by_series: dict[str, list[str]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_uid, []).append(inst.sop_uid)
    return [
        RetrieveRequest(
            study_uid=study_uid, series_uid=series, sop_uids=tuple(uids[i : i + IMAGE_LEVEL_BATCH])
        )
        for series, uids in sorted(by_series.items())
        for i in range(0, len(uids), IMAGE_LEVEL_BATCH)
    ]
