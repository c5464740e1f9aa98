"""Storage Commitment Push Model against a scripted SCP: same and separate associations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.commitment import CommitmentItem, CommitmentRegistry, request_commitment
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.dicomnet.store import open_store
from pacsmig.errors import PacsError
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.fault_scp import FaultSCP
from pacsmig.testing.servers import LOOPBACK, free_port


@pytest.fixture()
def stored(tmp_path: Path) -> Iterator[tuple[FaultSCP, list[CommitmentItem]]]:
    """A FaultSCP holding four instances pacsmig sent it."""
    paths = generate_study(tmp_path, patient_id="P1", patient_name="A^B", n_series=1, per_series=4)
    items = []
    pairs = set()
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        items.append(
            CommitmentItem(
                sop_class_uid=str(meta.MediaStorageSOPClassUID),
                sop_uid=str(meta.MediaStorageSOPInstanceUID),
            )
        )
        pairs.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    with FaultSCP("DEST", timeout=10, commitment=True) as scp:
        peer = Peer(ae_title="DEST", host=LOOPBACK, port=scp.port, timeout=10)
        with open_store("PACSMIG", peer, pairs) as session:
            for path, item in zip(paths, items, strict=True):
                meta = dcmread(path, stop_before_pixels=True).file_meta
                assert session.send_file(path, item.sop_class_uid, str(meta.TransferSyntaxUID))
        assert scp.stored_uids() == {i.sop_uid for i in items}
        yield scp, items


def _peer(scp: FaultSCP, timeout: float = 10) -> Peer:
    return Peer(ae_title=scp.ae_title, host=LOOPBACK, port=scp.port, timeout=timeout)


def test_same_association_report_names_failures(
    stored: tuple[FaultSCP, list[CommitmentItem]],
) -> None:
    scp, items = stored
    unknown = CommitmentItem(sop_class_uid=items[0].sop_class_uid, sop_uid="1.2.3.999")
    scp.storage_commitment("same", fail={items[1].sop_uid: 0x0110})
    registry = CommitmentRegistry()
    result = request_commitment(
        "PACSMIG", _peer(scp), [*items, unknown], timeout=10, registry=registry
    )
    assert result.same_association and not result.timed_out
    assert set(result.committed) == {items[0].sop_uid, items[2].sop_uid, items[3].sop_uid}
    reasons = {f.sop_uid: f.reason for f in result.failed}
    assert reasons == {
        items[1].sop_uid: "0x0110 processing failure",
        "1.2.3.999": "0x0112 no such object instance",
    }
    assert set(result.uncommitted) == {items[1].sop_uid, "1.2.3.999"}
    (request,) = scp.commitment_requests()
    assert request.transaction_uid == result.transaction_uid
    assert request.calling_ae_title == "PACSMIG"


def test_separate_association_report_reaches_the_listener(
    stored: tuple[FaultSCP, list[CommitmentItem]],
) -> None:
    scp, items = stored
    port = free_port()
    scp.storage_commitment(
        "separate", fail={items[3].sop_uid: 0x0213}, report_to=("PACSMIG", LOOPBACK, port)
    )
    with StorageSCP(
        ae_title="PACSMIG", port=port, allowed_calling=[], commitment_from=["DEST"], timeout=10
    ):
        result = request_commitment("PACSMIG", _peer(scp), items, timeout=10)
    assert not result.same_association and not result.timed_out
    assert set(result.committed) == {i.sop_uid for i in items[:3]}
    assert [(f.sop_uid, f.reason) for f in result.failed] == [
        (items[3].sop_uid, "0x0213 resource limitation")
    ]


def test_report_from_an_unknown_ae_is_not_taken(
    stored: tuple[FaultSCP, list[CommitmentItem]],
) -> None:
    scp, items = stored
    port = free_port()
    scp.storage_commitment("separate", report_to=("PACSMIG", LOOPBACK, port))
    # The listener admits only OTHER as a reporter: DEST's association is rejected.
    with StorageSCP(
        ae_title="PACSMIG",
        port=port,
        allowed_calling=["LEGACY"],
        commitment_from=["OTHER"],
        timeout=5,
    ):
        result = request_commitment(
            "PACSMIG", _peer(scp), items, timeout=1.5, same_association_wait=0.2
        )
    assert result.timed_out and result.committed == ()
    assert set(result.uncommitted) == {i.sop_uid for i in items}
    assert result.note == "not committed (timeout)"


def test_no_report_times_out(stored: tuple[FaultSCP, list[CommitmentItem]]) -> None:
    scp, items = stored
    scp.storage_commitment("none")
    result = request_commitment("PACSMIG", _peer(scp), items, timeout=0.6)
    assert result.timed_out and len(result.uncommitted) == len(items)
    assert len(scp.commitment_requests()) == 1


def test_refused_request_and_unsupported_service_raise(
    stored: tuple[FaultSCP, list[CommitmentItem]],
) -> None:
    scp, items = stored
    with (
        FaultSCP("PLAIN", timeout=5) as plain,
        pytest.raises(PacsError, match="does not support storage"),
    ):
        request_commitment("PACSMIG", _peer(plain), items, timeout=1)
    scp.storage_commitment("refuse")
    with pytest.raises(
        PacsError, match="refused the storage commitment request with status 0x0110"
    ):
        request_commitment("PACSMIG", _peer(scp), items, timeout=1)


def test_reporter_may_not_store(tmp_path: Path) -> None:
    path = generate_study(tmp_path, patient_id="P", patient_name="N", n_series=1, per_series=1)[0]
    meta = dcmread(path, stop_before_pixels=True).file_meta
    pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    got: list[object] = []
    port = free_port()
    with StorageSCP(
        ae_title="PACSMIG",
        port=port,
        allowed_calling=["LEGACY"],
        commitment_from=["DEST"],
        timeout=5,
    ) as listener:
        listener.set_sink(lambda item: got.append(item) or True)
        peer = Peer(ae_title="PACSMIG", host=LOOPBACK, port=port, timeout=5)
        with open_store("DEST", peer, [pair]) as session:
            outcome = session.send_file(path, *pair)
    assert not outcome.stored and outcome.code == 0x0124
    assert got == []
