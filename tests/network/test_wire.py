"""pacsmig's own C-STORE wire layer (``dicomnet/wire.py``) against real peers on loopback.

Each direction is checked against an independent implementation: DCMTK's ``storescp`` and
``storescu`` processes and a pynetdicom AE built here. What arrives is compared with what was
sent as data set *bytes*, located with pydicom's File Meta reader rather than pacsmig's.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from pacsmig.dicomnet import _patches, pdu, wire
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.received import ReceivedInstance
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.dicomnet.store import open_store
from pacsmig.errors import AssociationRejected, PacsError, PeerUnreachable
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.fault_scp import FaultSCP, abort, delay, raise_error, respond
from pacsmig.testing.servers import StoreSCPServer, dcmtk_tool, free_port, run_dcmtk
from tests.conftest import time_limit

try:
    for _tool in ("storescp", "storescu", "echoscu"):
        dcmtk_tool(_tool)
except FileNotFoundError as exc:  # pragma: no cover - depends on the host
    pytest.skip(f"DCMTK missing: {exc}", allow_module_level=True)

LOOPBACK = "127.0.0.1"
VERIFICATION = "1.2.840.10008.1.1"

# Real files in several transfer syntaxes: explicit and implicit little endian, big endian,
# JPEG baseline / extended / lossless, JPEG 2000 both, JPEG-LS, RLE; images, RT, SR, charsets.
SAMPLES = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "ExplVR_BigEnd.dcm",
    "693_J2KI.dcm",
    "US1_J2KR.dcm",
    "JPEG-lossy.dcm",
    "JPEG-LL.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "OBXXXX1A_rle.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
)

# storescu proposes uncompressed syntaxes only, unless told which compressed one to propose.
_STORESCU_FLAGS = {
    ImplicitVRLittleEndian: ["-xi"],
    ExplicitVRBigEndian: ["-xb"],
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.51": ["-xx"],
    "1.2.840.10008.1.2.4.70": ["-xs"],
    "1.2.840.10008.1.2.4.90": ["-xv"],
    "1.2.840.10008.1.2.4.91": ["-xw"],
    "1.2.840.10008.1.2.4.80": ["-xt"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    with time_limit(90):
        yield


# -- independent views of Part 10 files --------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    path: Path
    sop_class: str
    sop_uid: str  # as the File Meta names it: what a C-STORE of the file announces
    syntax: str
    dataset: bytes  # the bytes after the File Meta

    @property
    def pair(self) -> tuple[str, str]:
        return self.sop_class, self.syntax


def split_part10(data: bytes) -> tuple[pydicom.dataset.FileMetaDataset, bytes]:
    """(File Meta, data set bytes) as pydicom's reader finds them."""
    fp = io.BytesIO(data)
    assert read_preamble(fp, False) is not None, "not a Part 10 file"
    meta = _read_file_meta_info(fp)
    return meta, data[fp.tell() :]


def sample(path: Path) -> Sample:
    meta, dataset = split_part10(path.read_bytes())
    return Sample(
        path=path,
        sop_class=str(meta.MediaStorageSOPClassUID),
        sop_uid=str(meta.MediaStorageSOPInstanceUID),
        syntax=str(meta.TransferSyntaxUID),
        dataset=dataset,
    )


def real_samples(names: tuple[str, ...] = SAMPLES) -> list[Sample]:
    out = []
    for name in names:
        found = get_testdata_file(name, download=False)
        if found is None:  # pragma: no cover - depends on pydicom-data
            pytest.skip(f"pydicom test file {name} is not installed")
        out.append(sample(Path(found)))
    return out


def generated(tmp_path: Path, count: int) -> list[Sample]:
    paths = generate_study(
        tmp_path / "gen",
        patient_id="WIRE",
        patient_name="WIRE^TEST",
        n_series=1,
        per_series=count,
        rows=8,
        cols=8,
    )
    return [sample(p) for p in paths]


# -- peers built here ----------------------------------------------------------------------------


class BitPreservingStoreSCP(StoreSCPServer):
    """DCMTK storescp writing each data set exactly as received (``+B``); optionally with a
    small maximum receive PDU, so a sender must fragment."""

    def __init__(self, workdir: Path, *, aet: str = "STORESCP", max_pdu: int | None = None):
        super().__init__(workdir, aet=aet)
        self.max_pdu = max_pdu

    def _command(self) -> list[str]:
        cmd = super()._command()
        extra = ["+B", *(["-pdu", str(self.max_pdu)] if self.max_pdu else [])]
        return [*cmd[:-1], *extra, cmd[-1]]

    def received(self) -> dict[str, tuple[pydicom.dataset.FileMetaDataset, bytes]]:
        out = {}
        for path in self.received_files():
            meta, dataset = split_part10(path.read_bytes())
            out[str(meta.MediaStorageSOPInstanceUID)] = (meta, dataset)
        return out


@dataclass
class Arrival:
    sop_uid: str
    sop_class: str
    syntax: str
    dataset: bytes
    message_id: int
    implementation_version: str
    implementation_class_uid: str


@dataclass
class PynetdicomSCP:
    """A minimal pynetdicom Storage SCP recording what each C-STORE carried."""

    ae_title: str = "PYNDSCP"
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    _server: Any = None

    def __enter__(self) -> PynetdicomSCP:
        _patches.apply()  # TCP_NODELAY on pynetdicom's sockets: no 40 ms stalls per store
        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        ae.require_called_aet = True
        self._ae = ae
        self._server = ae.start_server(
            (LOOPBACK, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._ae.shutdown()

    def _on_store(self, event: Any) -> int:
        requestor = event.assoc.requestor
        self.arrivals.append(
            Arrival(
                sop_uid=str(event.request.AffectedSOPInstanceUID),
                sop_class=str(event.request.AffectedSOPClassUID),
                syntax=str(event.context.transfer_syntax),
                dataset=bytes(event.encoded_dataset(include_meta=False)),
                message_id=int(event.request.MessageID),
                implementation_version=str(requestor.implementation_version_name or ""),
                implementation_class_uid=str(requestor.implementation_class_uid),
            )
        )
        return 0x0000

    def peer(self, timeout: float = 10) -> Peer:
        return Peer(ae_title=self.ae_title, host=LOOPBACK, port=self.port, timeout=timeout)


class Sink:
    """An InstanceSink that keeps what pacsmig's Storage SCP hands it (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[ReceivedInstance] = []
        self._lock = threading.Lock()

    def __call__(self, item: ReceivedInstance) -> bool:
        with self._lock:
            self.items.append(item)
        return True

    def by_uid(self) -> dict[str, ReceivedInstance]:
        return {item.sop_uid: item for item in self.items}


@pytest.fixture()
def storage_scp() -> Iterator[tuple[StorageSCP, Sink]]:
    sink = Sink()
    with StorageSCP(
        ae_title="PACSMIG", port=free_port(), allowed_calling=["STORESCU", "LEGACY"], timeout=10
    ) as scp:
        scp.set_sink(sink)
        yield scp, sink


def send_all(calling: str, peer: Peer, samples: list[Sample]) -> list[Any]:
    with open_store(calling, peer, [s.pair for s in samples]) as session:
        return [session.send_file(s.path, *s.pair) for s in samples]


def storescu(
    port: int, paths: list[Path], *, calling: str, called: str, extra: tuple[str, ...] = ()
) -> list[Any]:
    """One storescu run per transfer syntax, each proposing exactly that syntax."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        syntax = sample(path).syntax
        groups.setdefault(tuple(_STORESCU_FLAGS.get(syntax, [])), []).append(str(path))
    runs = []
    for flags, group in groups.items():
        args = [*flags, *extra, "-R", "-aet", calling, "-aec", called, LOOPBACK, str(port), *group]
        runs.append(run_dcmtk("storescu", args, check=False, timeout=60))
    return runs


# -- pacsmig SCU -> DCMTK storescp ---------------------------------------------------------------


@pytest.mark.parametrize("max_pdu", [None, 4096], ids=["default-pdu", "pdu-4096"])
def test_scu_delivers_data_set_bytes_to_storescp(tmp_path: Path, max_pdu: int | None) -> None:
    samples = real_samples()
    assert len({s.syntax for s in samples}) >= 9
    with BitPreservingStoreSCP(tmp_path / "scp", aet="SINK", max_pdu=max_pdu) as scp:
        peer = Peer(ae_title="SINK", host=LOOPBACK, port=scp.port, timeout=10)
        outcomes = send_all("PACSMIG", peer, samples)
        received = scp.received()
    for s, outcome in zip(samples, outcomes, strict=True):
        assert outcome.category == "success", (s.path.name, outcome)
        assert outcome.sent_syntax == s.syntax
        meta, dataset = received[s.sop_uid]
        assert str(meta.TransferSyntaxUID) == s.syntax, s.path.name
        assert str(meta.MediaStorageSOPClassUID) == s.sop_class, s.path.name
        assert dataset == s.dataset, f"{s.path.name}: data set bytes differ"
    assert len(received) == len(samples)


def test_storescp_refuses_fragments_larger_than_its_max_pdu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny-PDU test above means something: a sender ignoring the limit is aborted."""
    monkeypatch.setattr(pdu, "fragment_size", lambda peer_max: 1 << 16)
    s = real_samples(("CT_small.dcm",))[0]
    with BitPreservingStoreSCP(tmp_path / "scp", aet="SINK", max_pdu=4096) as scp:
        peer = Peer(ae_title="SINK", host=LOOPBACK, port=scp.port, timeout=10)
        (outcome,) = send_all("PACSMIG", peer, [s])
        assert scp.received() == {}
    assert outcome.category == "in_doubt"


# -- DCMTK storescu -> pacsmig's Storage SCP -----------------------------------------------------


@pytest.mark.parametrize(
    "extra", [(), ("--max-send-pdu", "4096")], ids=["default-pdu", "send-pdu-4096"]
)
def test_storescu_to_storage_scp_delivers_what_storescu_sent(
    tmp_path: Path, storage_scp: tuple[StorageSCP, Sink], extra: tuple[str, ...]
) -> None:
    """storescu re-encodes files as it sends them (DCMTK drops group lengths, for one), so the
    reference is what the same storescu command delivers to a bit-preserving storescp."""
    scp, sink = storage_scp
    samples = real_samples()
    paths = [s.path for s in samples]
    runs = storescu(scp.port, paths, calling="STORESCU", called="PACSMIG", extra=extra)
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stdout + r.stderr for r in runs]
    with BitPreservingStoreSCP(tmp_path / "ref", aet="REF") as ref:
        ref_runs = storescu(ref.port, paths, calling="STORESCU", called="REF", extra=extra)
        assert all(r.returncode == 0 for r in ref_runs)
        reference = ref.received()

    got = sink.by_uid()
    assert len(sink.items) == len(samples) == len(got)
    assert set(got) == set(reference)
    for uid, item in got.items():
        ref_meta, ref_dataset = reference[uid]
        meta, dataset = split_part10(item.data)
        assert dataset == ref_dataset, f"{uid}: data set bytes differ from what storescu sent"
        assert item.transfer_syntax == str(ref_meta.TransferSyntaxUID)
        assert item.sop_class_uid == str(ref_meta.MediaStorageSOPClassUID)
        assert str(meta.TransferSyntaxUID) == item.transfer_syntax
        assert str(meta.MediaStorageSOPInstanceUID) == uid
    # And against the originals: each arrived in its own syntax, with the same pixels.
    for s in samples:
        original = pydicom.dcmread(s.path)
        item = got[str(original.SOPInstanceUID)]
        assert item.transfer_syntax == s.syntax, s.path.name
        received = pydicom.dcmread(io.BytesIO(item.data))
        assert received.SOPClassUID == original.SOPClassUID
        if "PixelData" in original:
            assert received.PixelData == original.PixelData, s.path.name


def test_storescu_with_a_calling_ae_not_allowed_stores_nothing(
    storage_scp: tuple[StorageSCP, Sink],
) -> None:
    scp, sink = storage_scp
    s = real_samples(("CT_small.dcm",))[0]
    (run,) = storescu(scp.port, [s.path], calling="INTRUDER", called="PACSMIG")
    assert run.returncode != 0
    assert "Calling AE Title Not Recognized" in run.stdout + run.stderr
    assert sink.items == []


def test_storescu_calling_the_wrong_ae_title_is_rejected(
    storage_scp: tuple[StorageSCP, Sink],
) -> None:
    scp, sink = storage_scp
    s = real_samples(("CT_small.dcm",))[0]
    (run,) = storescu(scp.port, [s.path], calling="STORESCU", called="NOTPACSMIG")
    assert run.returncode != 0
    assert "Called AE Title Not Recognized" in run.stdout + run.stderr
    assert sink.items == []


def test_echoscu_is_answered(storage_scp: tuple[StorageSCP, Sink]) -> None:
    scp, _ = storage_scp
    run = run_dcmtk(
        "echoscu", ["-aet", "STORESCU", "-aec", "PACSMIG", LOOPBACK, str(scp.port)], check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    refused = run_dcmtk(
        "echoscu", ["-aet", "STORESCU", "-aec", "WRONG", LOOPBACK, str(scp.port)], check=False
    )
    assert refused.returncode != 0


# -- pacsmig <-> pacsmig -------------------------------------------------------------------------


def test_300_instances_on_one_association(
    tmp_path: Path, storage_scp: tuple[StorageSCP, Sink]
) -> None:
    scp, sink = storage_scp
    samples = generated(tmp_path, 300)
    peer = Peer(ae_title="PACSMIG", host=LOOPBACK, port=scp.port, timeout=10)
    with open_store("LEGACY", peer, [s.pair for s in samples]) as session:
        outcomes = [session.send_file(s.path, *s.pair) for s in samples]
        assert session.is_established
    assert [o.category for o in outcomes] == ["success"] * 300
    assert len(sink.items) == 300
    got = sink.by_uid()
    assert set(got) == {s.sop_uid for s in samples}
    for s in samples:
        assert split_part10(got[s.sop_uid].data)[1] == s.dataset


def test_several_associations_at_once(tmp_path: Path, storage_scp: tuple[StorageSCP, Sink]) -> None:
    scp, sink = storage_scp
    samples = generated(tmp_path, 60)
    peer = Peer(ae_title="PACSMIG", host=LOOPBACK, port=scp.port, timeout=10)
    results: list[list[Any]] = [[] for _ in range(3)]

    def send(n: int) -> None:
        results[n] = send_all("LEGACY", peer, samples[n::3])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(1 for r in results for o in r if o.category == "success") == 60
    assert sorted(i.sop_uid for i in sink.items) == sorted(s.sop_uid for s in samples)


# -- pynetdicom peers ----------------------------------------------------------------------------


def test_scu_to_a_pynetdicom_scp_delivers_identical_data_sets() -> None:
    samples = real_samples()
    with PynetdicomSCP() as scp:
        outcomes = send_all("PACSMIG", scp.peer(), samples)
    assert [o.category for o in outcomes] == ["success"] * len(samples)
    by_uid = {a.sop_uid: a for a in scp.arrivals}
    assert len(scp.arrivals) == len(samples) == len(by_uid)
    for s in samples:
        arrival = by_uid[s.sop_uid]
        assert (arrival.sop_class, arrival.syntax) == s.pair
        assert arrival.dataset == s.dataset, s.path.name
    # Each request has its own message ID; the association says who is speaking.
    assert sorted(a.message_id for a in scp.arrivals) == list(range(1, len(samples) + 1))
    assert {a.implementation_version for a in scp.arrivals} == {wire.IMPLEMENTATION_VERSION}


def test_pynetdicom_scu_to_storage_scp_delivers_identical_data_sets(
    storage_scp: tuple[StorageSCP, Sink],
) -> None:
    from pynetdicom import _config

    scp, sink = storage_scp
    samples = real_samples()
    ae = AE(ae_title="LEGACY")
    for pair in sorted({s.pair for s in samples}):
        ae.add_requested_context(pair[0], [pair[1]])
    ae.add_requested_context(VERIFICATION)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's own bytes, not a re-encoding
    try:
        assoc = ae.associate(LOOPBACK, scp.port, ae_title="PACSMIG")
        assert assoc.is_established
        # An allowed caller is served by the wire path, not handed over to pynetdicom.
        assert assoc.acceptor.implementation_version_name == wire.IMPLEMENTATION_VERSION
        statuses = [assoc.send_c_store(s.path, msg_id=n + 1) for n, s in enumerate(samples)]
        echo = assoc.send_c_echo()
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        ae.shutdown()
    assert [int(st.Status) for st in statuses] == [0] * len(samples)
    assert int(echo.Status) == 0
    got = sink.by_uid()
    assert len(sink.items) == len(samples) == len(got)
    for s in samples:
        item = got[s.sop_uid]
        assert (item.sop_class_uid, item.transfer_syntax) == s.pair
        assert split_part10(item.data)[1] == s.dataset, s.path.name


def test_pacsmig_wire_pynetdicom_puts_the_sender_back_on_pynetdicom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = real_samples(("CT_small.dcm", "MR_small_implicit.dcm"))
    with PynetdicomSCP() as scp:
        with open_store("PACSMIG", scp.peer(), [s.pair for s in samples]) as session:
            assert type(session._transport).__name__ == "_WireTransport"
            assert session.send_file(samples[0].path, *samples[0].pair).stored
        monkeypatch.setenv("PACSMIG_WIRE", " PyNetDicom ")
        assert not wire.enabled()
        with open_store("PACSMIG", scp.peer(), [s.pair for s in samples]) as session:
            assert type(session._transport).__name__ == "_PynetdicomTransport"
            assert session.send_file(samples[1].path, *samples[1].pair).stored
    first, second = scp.arrivals
    assert first.implementation_version == wire.IMPLEMENTATION_VERSION
    assert second.implementation_version.startswith("PYNETDICOM")
    assert (first.dataset, second.dataset) == (samples[0].dataset, samples[1].dataset)


def test_pacsmig_wire_pynetdicom_puts_the_storage_scp_back_on_pynetdicom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACSMIG_WIRE", "pynetdicom")
    sink = Sink()
    s = real_samples(("CT_small.dcm",))[0]
    with StorageSCP(
        ae_title="PACSMIG", port=free_port(), allowed_calling=["STORESCU"], timeout=10
    ) as scp:
        scp.set_sink(sink)
        assert scp._wire is None
        (run,) = storescu(scp.port, [s.path], calling="STORESCU", called="PACSMIG")
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(s.sop_class, [s.syntax])
        try:
            assoc = ae.associate(LOOPBACK, scp.port, ae_title="PACSMIG")
            assert assoc.is_established
            version = str(assoc.acceptor.implementation_version_name)
            assoc.release()
        finally:
            ae.shutdown()
    assert run.returncode == 0, run.stdout + run.stderr
    assert [i.sop_uid for i in sink.items] == [s.sop_uid]
    assert version.startswith("PYNETDICOM")


# -- errors --------------------------------------------------------------------------------------


def test_nothing_listening_is_peer_unreachable() -> None:
    port = free_port()
    peer = Peer(ae_title="NOBODY", host=LOOPBACK, port=port, timeout=5, role="destination")
    started = time.monotonic()
    with pytest.raises(PeerUnreachable) as info, open_store("PACSMIG", peer, [("1.2", "1.2")]):
        pass
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message
    assert f"{LOOPBACK}:{port}" in message and "refused" in message


@pytest.mark.parametrize(
    ("scp_args", "calling", "called", "match", "transient"),
    [
        ({"allowed_calling": ["SOMEONE"]}, "PACSMIG", "FAULTSCP", "calling AE title not", False),
        ({}, "PACSMIG", "NOTFAULTSCP", "called AE title not recognised", False),
    ],
    ids=["calling", "called"],
)
def test_rejections_are_association_rejected(
    scp_args: dict[str, Any], calling: str, called: str, match: str, transient: bool
) -> None:
    s = real_samples(("CT_small.dcm",))[0]
    with FaultSCP("FAULTSCP", **scp_args) as scp:
        peer = Peer(ae_title=called, host=LOOPBACK, port=scp.port, timeout=5)
        with (
            pytest.raises(AssociationRejected, match=match) as info,
            open_store(calling, peer, [s.pair]),
        ):
            pass
        assert scp.attempts() == []
    assert info.value.transient is transient
    assert "\n" not in str(info.value)


def test_transient_rejection_says_so() -> None:
    s = real_samples(("CT_small.dcm",))[0]
    with FaultSCP("FAULTSCP") as scp:
        scp.reject_associations(1, transient=True)
        peer = Peer(ae_title="FAULTSCP", host=LOOPBACK, port=scp.port, timeout=5)
        with (
            pytest.raises(AssociationRejected, match="transiently") as info,
            open_store("PACSMIG", peer, [s.pair]),
        ):
            pass
        assert info.value.transient
        # The next association is accepted and stores.
        (outcome,) = send_all("PACSMIG", peer, [s])
        assert outcome.category == "success"
        assert scp.stored_uids() == {s.sop_uid}


def test_a_peer_that_never_answers_the_association_request() -> None:
    listener = socket.create_server((LOOPBACK, 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    peer = Peer(ae_title="SILENT", host=LOOPBACK, port=listener.getsockname()[1], timeout=1)
    started = time.monotonic()
    try:
        with (
            pytest.raises(PacsError, match="did not complete the association"),
            open_store("PACSMIG", peer, [("1.2", "1.2")]),
        ):
            pass
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - started < 4


def test_no_answer_to_a_c_store_is_in_doubt_not_an_exception() -> None:
    samples = real_samples(("CT_small.dcm", "MR_small_implicit.dcm"))
    with FaultSCP("FAULTSCP") as scp:
        scp.script_default(delay(20))
        peer = Peer(ae_title="FAULTSCP", host=LOOPBACK, port=scp.port, timeout=1)
        with open_store("PACSMIG", peer, [s.pair for s in samples]) as session:
            started = time.monotonic()
            first = session.send_file(samples[0].path, *samples[0].pair)
            waited = time.monotonic() - started
            assert not session.is_established
            second = session.send_file(samples[1].path, *samples[1].pair)
        assert [a.sop_uid for a in scp.attempts()] == [samples[0].sop_uid]
    assert first.category == "in_doubt" and first.code is None
    assert first.transient
    assert 0.9 <= waited < 4
    assert second.category == "in_doubt"


def test_an_abort_instead_of_an_answer_is_in_doubt() -> None:
    s = real_samples(("CT_small.dcm",))[0]
    with FaultSCP("FAULTSCP") as scp:
        scp.script_default(abort(keep=True))
        peer = Peer(ae_title="FAULTSCP", host=LOOPBACK, port=scp.port, timeout=5)
        with open_store("PACSMIG", peer, [s.pair]) as session:
            outcome = session.send_file(s.path, *s.pair)
            assert not session.is_established
        assert scp.stored_uids() == {s.sop_uid}  # stored, yet the sender cannot know
    assert outcome.category == "in_doubt"
    assert "abort" in outcome.comment


def test_statuses_and_comments_reach_the_outcome() -> None:
    samples = real_samples(("CT_small.dcm", "MR_small_implicit.dcm", "JPEG-LL.dcm", "rtplan.dcm"))
    with FaultSCP("FAULTSCP") as scp:
        scp.script(samples[0].sop_uid, respond(0xA700, "disk full"))
        scp.script(samples[1].sop_uid, respond(0xB000, "coerced"))
        scp.script(samples[2].sop_uid, raise_error())
        peer = Peer(ae_title="FAULTSCP", host=LOOPBACK, port=scp.port, timeout=5)
        outcomes = send_all("PACSMIG", peer, samples)
    full, coerced, raised, fine = outcomes
    assert (full.category, full.code, full.comment) == ("failure", 0xA700, "disk full")
    assert full.transient
    assert (coerced.category, coerced.code, coerced.comment) == ("warning", 0xB000, "coerced")
    assert (raised.category, raised.code) == ("failure", 0xC211)
    assert (fine.category, fine.code) == ("success", 0x0000)


def test_more_contexts_than_an_association_holds_is_a_pacs_error() -> None:
    """With PACSMIG_WIRE=pynetdicom this is PacsError("... exceed DICOM's limit of 128"); the
    wire path must refuse the same way rather than crash on a context ID above 255."""
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts][:70]
    pairs = [(c, "1.2.840.10008.1.2.4.50") for c in classes]
    with PynetdicomSCP() as scp:
        with pytest.raises(PacsError, match="128"), open_store("PACSMIG", scp.peer(), pairs):
            pass


def test_odd_length_deflated_data_set_reaches_storescp(tmp_path: Path) -> None:
    """image_dfl.dcm's deflated data set has odd length (4303); DCMTK aborts on an odd
    fragment, so the wire path pads it with a null as pydicom does when writing one."""
    s = real_samples(("image_dfl.dcm",))[0]
    assert len(s.dataset) % 2 == 1
    with BitPreservingStoreSCP(tmp_path / "scp", aet="SINK") as scp:
        peer = Peer(ae_title="SINK", host=LOOPBACK, port=scp.port, timeout=10)
        (outcome,) = send_all("PACSMIG", peer, [s])
    assert outcome.category == "success"


@pytest.mark.parametrize("wire_env", ["", "pynetdicom"], ids=["wire", "pynetdicom"])
def test_commitment_report_from_a_destination_sharing_the_sources_ae_title(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wire_env: str
) -> None:
    """Source and destination both called ORTHANC (Orthanc's default AE title): the
    destination's report arrives on its own association from an *allowed* calling AE, and
    must still reach the registry as it does when pynetdicom serves every association."""
    from pacsmig.dicomnet.commitment import CommitmentItem, request_commitment

    monkeypatch.setenv("PACSMIG_WIRE", wire_env)
    samples = generated(tmp_path, 3)
    items = [CommitmentItem(sop_class_uid=s.sop_class, sop_uid=s.sop_uid) for s in samples]
    port = free_port()
    with FaultSCP("ORTHANC", timeout=10, commitment=True) as dest:
        peer = Peer(ae_title="ORTHANC", host=LOOPBACK, port=dest.port, timeout=10)
        assert all(o.stored for o in send_all("PACSMIG", peer, samples))
        dest.storage_commitment("separate", report_to=("PACSMIG", LOOPBACK, port))
        with StorageSCP(
            ae_title="PACSMIG",
            port=port,
            allowed_calling=["ORTHANC"],
            commitment_from=["ORTHANC"],
            timeout=10,
        ):
            result = request_commitment(
                "PACSMIG", peer, items, timeout=3, same_association_wait=0.2
            )
    assert not result.timed_out
    assert set(result.committed) == {s.sop_uid for s in samples}


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("ExplVR_LitEndNoMeta.dcm", "1.2.840.10008.1.2.1"),
        ("rtstruct.dcm", "1.2.840.10008.1.2"),
        ("ExplVR_BigEndNoMeta.dcm", "1.2.840.10008.1.2.2"),
    ],
)
def test_a_file_without_preamble_goes_as_its_data_set(name: str, syntax: str) -> None:
    from pydicom.filereader import read_dataset

    path = Path(str(get_testdata_file(name, download=False)))
    original = pydicom.dcmread(path, force=True)
    pair = (str(original.SOPClassUID), syntax)
    with PynetdicomSCP() as scp:
        with open_store("PACSMIG", scp.peer(), [pair]) as session:
            outcome = session.send_file(path, *pair)
    assert outcome.category == "success", outcome
    (arrival,) = scp.arrivals
    assert (arrival.sop_uid, arrival.syntax) == (str(original.SOPInstanceUID), syntax)
    implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    assert read_dataset(io.BytesIO(arrival.dataset), implicit, little) == original


@pytest.mark.parametrize("content", ["noise", "cut-short"])
def test_an_unreadable_file_is_a_failure_outcome_not_an_exception(
    tmp_path: Path, content: str
) -> None:
    """A spool file that is not DICOM (or was cut short) fails that instance alone: the
    wire sender answers "not a Part 10 file" rather than raising out of send_file."""
    import random

    ct = real_samples(("CT_small.dcm",))[0]
    path = tmp_path / "bad.dcm"
    if content == "noise":
        path.write_bytes(random.Random(7).randbytes(3000))
    else:
        path.write_bytes(ct.path.read_bytes()[:200])
    with PynetdicomSCP() as scp:
        with open_store("PACSMIG", scp.peer(), [ct.pair]) as session:
            outcome = session.send_file(path, *ct.pair)
            assert session.is_established  # nothing went on the wire
            after = session.send_file(ct.path, *ct.pair)
    assert outcome.category == "failure" and outcome.code is None
    assert after.category == "success"
    assert [a.sop_uid for a in scp.arrivals] == [ct.sop_uid]


def test_a_destination_refusing_every_context_is_no_accepted_contexts() -> None:
    from pacsmig.errors import NoAcceptedContexts

    s = real_samples(("CT_small.dcm",))[0]
    with FaultSCP("FAULTSCP", refuse_sop_classes=[s.sop_class]) as scp:
        peer = Peer(ae_title="FAULTSCP", host=LOOPBACK, port=scp.port, timeout=5)
        with (
            pytest.raises(NoAcceptedContexts, match=s.sop_class),
            open_store("PACSMIG", peer, [s.pair]),
        ):
            pass
        assert scp.attempts() == []


def test_storage_scp_on_a_port_in_use_is_a_pacs_error() -> None:
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        scp = StorageSCP(ae_title="PACSMIG", port=port, allowed_calling=["LEGACY"], timeout=5)
        with pytest.raises(PacsError, match=f"cannot listen on \\*:{port}"):
            scp.start()
