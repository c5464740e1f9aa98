"""DCMTK dcmqrscp as a second kind of source: no count keys, no SOP Class in C-FIND, strict hierarchy."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pacsmig.testing.corpus import generate_corpus, real_sample_files
from pacsmig.testing.servers import DcmqrscpServer, OrthancServer, free_port
from tests.integration.conftest import run_cli
from tests.integration.helpers import element_differences, read

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


@pytest.mark.parametrize("retrieve", ["c-get", "c-move"])
def test_migrate_from_dcmqrscp(tmp_path: Path, retrieve: str) -> None:
    local_port = free_port()
    # dcmqrscp never transcodes: keep to the uncompressed files it can hand to anyone.
    real = [
        f
        for f in real_sample_files()
        if pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID in UNCOMPRESSED
    ]
    files = real + generate_corpus(tmp_path / "gen", studies=3, per_series=2)
    with (
        DcmqrscpServer(
            tmp_path / "qr", aet="LEGACYQR", peers={"PACSMIG": ("127.0.0.1", local_port)}
        ) as qr,
        OrthancServer(tmp_path / "dest", aet="NEWPACS") as dest,
    ):
        loaded = qr.load(files)
        assert len(loaded) >= 10
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            f"version: 1\nname: qr\nlocal: {{ae_title: PACSMIG, port: {local_port}}}\n"
            f"source: {{kind: dimse, ae_title: LEGACYQR, host: 127.0.0.1, port: {qr.port}, retrieve: {retrieve}}}\n"
            f"destination: {{ae_title: NEWPACS, host: 127.0.0.1, port: {dest.dicom_port}}}\n"
        )
        plan = tmp_path / "plan.json"
        run_cli("plan", spec, "-o", plan, check=0)
        run_cli("apply", plan, "--auto-approve", check=0)
        assert dest.sop_instance_uids() == loaded
        stored = {str(read(p).SOPInstanceUID): p for p in qr.stored_files()}
        for uid in sorted(loaded):
            diffs = element_differences(read(stored[uid]), read(dest.instance_file(uid)))
            assert not diffs, f"{uid}: {diffs}"
        run_cli("verify", plan, check=0)
