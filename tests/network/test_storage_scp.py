"""pacsmig's own Storage SCP (the C-MOVE destination) accepts only the configured source."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.received import ReceivedInstance
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.dicomnet.store import open_store
from pacsmig.errors import AssociationRejected
from pacsmig.testing.corpus import generate_study
from pacsmig.testing.servers import free_port


def test_only_the_source_ae_may_store(tmp_path: Path) -> None:
    from pydicom import dcmread

    path = generate_study(tmp_path, patient_id="P", patient_name="N", n_series=1, per_series=1)[0]
    meta = dcmread(path, stop_before_pixels=True).file_meta
    pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    got: list[ReceivedInstance] = []
    port = free_port()
    with StorageSCP(ae_title="PACSMIG", port=port, allowed_calling=["LEGACY"], timeout=5) as scp:
        scp.set_sink(lambda item: got.append(item) or True)
        peer = Peer(ae_title="PACSMIG", host="127.0.0.1", port=port, timeout=5)
        with (
            pytest.raises(AssociationRejected, match="calling AE title not recognised"),
            open_store("INTRUDER", peer, [pair]),
        ):
            pass
        wrong_called = Peer(ae_title="SOMEONE", host="127.0.0.1", port=port, timeout=5)
        with (
            pytest.raises(AssociationRejected, match="called AE title not recognised"),
            open_store("LEGACY", wrong_called, [pair]),
        ):
            pass
        assert got == []
        with open_store("LEGACY", peer, [pair]) as session:
            assert session.send_file(path, *pair).stored
    assert [g.sop_uid for g in got] == [str(meta.MediaStorageSOPInstanceUID)]
    import io

    received = dcmread(io.BytesIO(got[0].data))
    original = dcmread(path)
    assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert received.PixelData == original.PixelData


def test_no_sink_refuses_rather_than_pretends(tmp_path: Path) -> None:
    from pydicom import dcmread

    path = generate_study(tmp_path, patient_id="P", patient_name="N", n_series=1, per_series=1)[0]
    meta = dcmread(path, stop_before_pixels=True).file_meta
    pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    port = free_port()
    with StorageSCP(ae_title="PACSMIG", port=port, allowed_calling=["LEGACY"], timeout=5):
        peer = Peer(ae_title="PACSMIG", host="127.0.0.1", port=port, timeout=5)
        with open_store("LEGACY", peer, [pair]) as session:
            outcome = session.send_file(path, *pair)
    assert outcome.code == 0xA700 and not outcome.stored
