"""Sending to a destination that takes only some transfer syntaxes.

The destination is a real Orthanc limited with "AcceptedTransferSyntaxes" (it then accepts
nothing else, not even uncompressed); what it stored is fetched back through its REST API
(/instances/{id}/file) and decoded with pydicom, independently of pacsmig. Failure outcomes
are checked against the in-process fault SCP.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.status import StoreOutcome
from pacsmig.dicomnet.store import open_store
from pacsmig.spec.model import LossyPolicy
from pacsmig.testing.fault_scp import FaultSCP
from pacsmig.testing.servers import OrthancServer, orthanc_binary
from tests.conftest import time_limit

try:
    orthanc_binary()
except FileNotFoundError as exc:  # pragma: no cover - depends on the host
    pytest.skip(f"Orthanc missing: {exc}", allow_module_level=True)

# Lossless originals in every codec pacsmig decodes, plus an uncompressed one.
LOSSLESS = [
    "US1_J2KR.dcm",  # JPEG 2000 lossless, colour (YBR_RCT)
    "emri_small_jpeg_2k_lossless.dcm",  # JPEG 2000 lossless, 10 frames
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, signed
    "JPEG-LL.dcm",  # JPEG lossless, 16-bit signed
    "SC_rgb_rle_16bit.dcm",  # RLE, 16-bit colour
    "CT_small.dcm",  # explicit VR little endian
]


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    with time_limit(180):
        yield


def _path(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    assert found is not None
    return Path(str(found))


def _read(data: bytes | Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


def _pixels(ds: Dataset) -> np.ndarray[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _pair(path: Path) -> tuple[str, str]:
    meta = _read(path).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def _send(peer: Peer, names: list[str], **options: Any) -> dict[str, StoreOutcome]:
    paths = {name: _path(name) for name in names}
    pairs = {_pair(p) for p in paths.values()}
    with open_store("PACSMIG", peer, pairs, **options) as session:
        return {name: session.send_file(p, *_pair(p)) for name, p in paths.items()}


def _stored(orthanc: OrthancServer, sop_uid: str) -> Dataset:
    """The instance exactly as the destination keeps it."""
    found = orthanc.rest_post("/tools/lookup", sop_uid)
    ids = [f["ID"] for f in found if f["Type"] == "Instance"]
    assert len(ids) == 1, sop_uid
    return _read(orthanc.rest_get_bytes(f"/instances/{ids[0]}/file"))


def _peer(port: int, ae_title: str = "NEWPACS") -> Peer:
    return Peer(ae_title=ae_title, host="127.0.0.1", port=port, timeout=20)


@pytest.mark.parametrize("only", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_a_refused_syntax_arrives_losslessly_in_the_one_accepted(tmp_path: Path, only: str) -> None:
    with OrthancServer(
        tmp_path / "dest", aet="NEWPACS", extra_config={"AcceptedTransferSyntaxes": [only]}
    ) as dest:
        outcomes = _send(_peer(dest.dicom_port), LOSSLESS)
        for name, outcome in outcomes.items():
            assert outcome.stored, (name, outcome)
            assert outcome.sent_syntax == only
            original = _read(_path(name))
            got = _stored(dest, str(original.SOPInstanceUID))
            assert got.file_meta.TransferSyntaxUID == only
            assert got.SOPInstanceUID == original.SOPInstanceUID
            assert got.SOPClassUID == original.SOPClassUID
            assert np.array_equal(_pixels(got), _pixels(original)), name


def test_preferred_syntax_is_used_where_the_pixels_allow_it(tmp_path: Path) -> None:
    names = ["SC_rgb_rle_16bit.dcm", "US1_J2KR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "test-SR.dcm"]
    with OrthancServer(tmp_path / "dest", aet="NEWPACS") as dest:
        outcomes = _send(_peer(dest.dicom_port), names, syntaxes=(JPEGLSLossless,))
        expected = {
            "SC_rgb_rle_16bit.dcm": JPEGLSLossless,
            "US1_J2KR.dcm": JPEGLSLossless,
            # a lossy original is never re-encoded as lossless; it goes as it is
            "SC_rgb_jpeg_dcmtk.dcm": JPEGBaseline8Bit,
            # no pixels to encode: as it is
            "test-SR.dcm": ExplicitVRLittleEndian,
        }
        for name, syntax in expected.items():
            assert outcomes[name].stored, (name, outcomes[name])
            assert outcomes[name].sent_syntax == syntax
            original = _read(_path(name))
            got = _stored(dest, str(original.SOPInstanceUID))
            assert got.file_meta.TransferSyntaxUID == syntax
            if syntax != _pair(_path(name))[1]:
                assert np.array_equal(_pixels(got), _pixels(original)), name
            elif "PixelData" in original:
                assert got.PixelData == original.PixelData  # sent as its own bytes


def test_lossy_only_with_the_policy_and_recorded(tmp_path: Path) -> None:
    policy = LossyPolicy(syntax=JPEG2000, quality=10)
    with OrthancServer(tmp_path / "dest", aet="NEWPACS") as dest:
        outcomes = _send(_peer(dest.dicom_port), ["CT_small.dcm", "JPEG-LL.dcm"], lossy=policy)
        for name, outcome in outcomes.items():
            assert outcome.stored and outcome.sent_syntax == JPEG2000, (name, outcome)
            original = _read(_path(name))
            got = _stored(dest, str(original.SOPInstanceUID))
            assert got.file_meta.TransferSyntaxUID == JPEG2000
            assert got.SOPInstanceUID == original.SOPInstanceUID
            assert got.LossyImageCompression == "01"
            assert list(np.atleast_1d(got.LossyImageCompressionMethod))[-1] == "ISO_15444_1"
            assert float(np.atleast_1d(got.LossyImageCompressionRatio)[-1]) > 5
            assert _pixels(got).shape == _pixels(original).shape


def test_what_cannot_be_converted_is_a_failure_outcome(tmp_path: Path) -> None:
    with FaultSCP("NARROW", transfer_syntaxes=[JPEG2000Lossless]) as dest:
        outcomes = _send(
            _peer(dest.port, "NARROW"),
            ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_32bit.dcm", "CT_small.dcm"],
        )
        lossy_original = outcomes["SC_rgb_jpeg_dcmtk.dcm"]
        assert lossy_original.category == "failure"
        assert lossy_original.comment.startswith("unsupported_by_destination:")
        too_deep = outcomes["SC_rgb_32bit.dcm"]
        assert too_deep.category == "failure"
        assert too_deep.comment.startswith("transcode_failed:")
        assert "\n" not in too_deep.comment
        # The association is still good for the next instance.
        assert outcomes["CT_small.dcm"].stored
        assert outcomes["CT_small.dcm"].sent_syntax == JPEG2000Lossless
        ct = _read(_path("CT_small.dcm"))
        assert dest.stored_uids() == {str(ct.SOPInstanceUID)}
        got = _read(dest.data(str(ct.SOPInstanceUID)))
        assert np.array_equal(_pixels(got), _pixels(ct))
