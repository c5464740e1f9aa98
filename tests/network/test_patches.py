"""The pynetdicom workarounds in pacsmig.dicomnet._patches, against real peers on loopback.

Each test fails without its patch on this machine (see ../shared/PYNETDICOM.md): without
TCP_NODELAY a round trip stalls on delayed ACKs; without the reactor fix a response is taken by
the association's own thread, and a C-FIND loses answers or a C-STORE stalls to its timeout.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from pacsmig.dicomnet import _patches
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.find import open_find
from pacsmig.dicomnet.store import open_store
from pacsmig.dicomnet.wire import WireAssociation
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.servers import StoreSCPServer, free_port

N_ANSWERS = 40


@pytest.fixture(autouse=True, params=["pynetdicom", "wire"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test on pynetdicom (which the patches fix) and on pacsmig's own wire code (which
    must not have the problems they fix)."""
    monkeypatch.setenv("PACSMIG_WIRE", "pynetdicom" if request.param == "pynetdicom" else "")
    return str(request.param)


@pytest.fixture()
def find_scp() -> Iterator[int]:
    """A fast in-process C-FIND SCP answering N_ANSWERS numbered series per query."""

    def handle_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        study = event.identifier.StudyInstanceUID
        for i in range(N_ANSWERS):
            ds = Dataset()
            ds.QueryRetrieveLevel = "SERIES"
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = f"{study}.{i}"
            ds.NumberOfSeriesRelatedInstances = i
            yield 0xFF00, ds

    ae = AE(ae_title="FINDSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, handle_find)]
    )
    try:
        yield port
    finally:
        server.shutdown()


def test_sockets_get_tcp_nodelay(find_scp: int) -> None:
    peer = Peer(ae_title="FINDSCP", host="127.0.0.1", port=find_scp, timeout=10)
    with open_find("PACSMIG", peer) as finder:
        assoc = finder._assoc
        sock = assoc._sock if isinstance(assoc, WireAssociation) else assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_c_find_answers_are_complete_and_in_order(find_scp: int) -> None:
    """Hundreds of queries on one association: every answer, every time, in order."""
    peer = Peer(ae_title="FINDSCP", host="127.0.0.1", port=find_scp, timeout=10)
    started = time.monotonic()
    with open_find("PACSMIG", peer) as finder:
        for q in range(300):
            study = f"1.2.3.{q + 1}"
            keys = {
                "StudyInstanceUID": study,
                "SeriesInstanceUID": "",
                "NumberOfSeriesRelatedInstances": "",
            }
            got = [str(ds.SeriesInstanceUID) for ds in finder.query("SERIES", keys)]
            assert got == [f"{study}.{i}" for i in range(N_ANSWERS)], f"query {q}"
    # With Nagle's delayed ACKs each query would cost 40+ ms.
    assert time.monotonic() - started < 60


def test_many_c_stores_to_storescp_ignore_never_stall(tmp_path: Path) -> None:
    """2,000 C-STOREs on one association to DCMTK's fastest peer: none waits for a timeout."""
    files = generate_study(
        tmp_path / "s", patient_id="P", patient_name="N", n_series=1, per_series=1, rows=8, cols=8
    )
    path = files[0]
    with StoreSCPServer(tmp_path / "scp", ignore=True) as scp:
        peer = Peer(ae_title=scp.aet, host="127.0.0.1", port=scp.port, timeout=5)
        from pydicom import dcmread

        meta = dcmread(path, stop_before_pixels=True).file_meta
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        slowest = 0.0
        with open_store("PACSMIG", peer, [pair]) as session:
            for _ in range(2000):
                t0 = time.monotonic()
                outcome = session.send_file(path, *pair)
                slowest = max(slowest, time.monotonic() - t0)
                assert outcome.stored, outcome.describe()
        assert slowest < 2.0, f"a C-STORE waited {slowest:.1f}s: a response was lost"


def test_patches_are_installed_once_and_removable() -> None:
    from pynetdicom.association import Association

    assert isinstance(Association.__dict__["_is_paused"], property)
    _patches.remove()
    try:
        assert "_is_paused" not in Association.__dict__
    finally:
        _patches.apply()
    assert isinstance(Association.__dict__["_is_paused"], property)
