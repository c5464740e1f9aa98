"""Scenario 10: the destination refuses an instance's transfer syntax or SOP class.

Expected: a refused compressed syntax is decoded losslessly and sent uncompressed (pixels
equal, SOP class and SOP Instance UID unchanged); a refused SOP class fails the instance with
'unsupported_by_destination'; nothing is ever re-labelled as another SOP class.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from pacsmig import api
from pacsmig.journal.store import FAILED, SENT, Journal
from pacsmig.plan.codec import read_plan
from pacsmig.testing.fault_scp import FaultSCP
from pacsmig.testing.servers import OrthancServer

ELE, ILE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def test_refused_syntax_is_decoded_and_refused_class_fails(tmp_path: Path) -> None:
    names = ["JPEG-LL.dcm", "CT_small.dcm", "test-SR.dcm", "US1_J2KR.dcm"]
    files = [Path(get_testdata_file(n, download=False)) for n in names]  # type: ignore[arg-type]
    uid = {
        n: str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        for n, f in zip(names, files, strict=True)
    }
    with (
        OrthancServer(tmp_path / "src", aet="LEGACY") as source,
        FaultSCP(
            "NARROW", transfer_syntaxes=[ELE, ILE], refuse_sop_classes=[COMPREHENSIVE_SR]
        ) as dest,
    ):
        for f in files:
            assert source.upload(f)
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            "version: 1\nname: narrow\nlocal: {ae_title: PACSMIG}\n"
            f"source: {{kind: dimse, ae_title: LEGACY, host: 127.0.0.1, port: {source.dicom_port}}}\n"
            f"destination: {{ae_title: NARROW, host: 127.0.0.1, port: {dest.port}, timeout: 10}}\n"
        )
        plan = tmp_path / "plan.json"
        api.plan(spec, plan)
        result = api.apply(plan, auto_approve=True)
        assert result.failed == 1 and result.failure_reasons == {"unsupported_by_destination": 1}
        assert dest.stored_uids() == {uid["JPEG-LL.dcm"], uid["CT_small.dcm"], uid["US1_J2KR.dcm"]}
        for name in ("JPEG-LL.dcm", "US1_J2KR.dcm"):
            original = pydicom.dcmread(get_testdata_file(name, download=False))
            got = pydicom.dcmread(io.BytesIO(dest.data(uid[name])), force=True)
            assert str(got.SOPClassUID) == str(original.SOPClassUID)
            assert got.file_meta.TransferSyntaxUID in (ELE, ILE)
            # Lossless source, lossless path: the decoded pixels are the same pixels.
            assert np.array_equal(got.pixel_array, original.pixel_array), name
        with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
            rows = {r.sop_uid: r for r in journal.instances()}
        assert rows[uid["test-SR.dcm"]].state == FAILED
        assert rows[uid["test-SR.dcm"]].reason == "unsupported_by_destination"
        # Refused alone ("accepted none") or beside accepted classes ("not accepted"): the
        # detail names the refusal either way.
        detail = rows[uid["test-SR.dcm"]].detail
        assert "accepted none" in detail or "not accepted" in detail
        assert rows[uid["JPEG-LL.dcm"]].state == SENT
