"""Checks made independently of pacsmig: pydicom on the files Orthanc hands back over REST."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from pacsmig.testing.servers import OrthancServer


def read(data: bytes | Path) -> Dataset:
    if isinstance(data, Path):
        return pydicom.dcmread(data, force=True)
    return pydicom.dcmread(io.BytesIO(data), force=True)


def sop_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def element_differences(a: Dataset, b: Dataset) -> list[str]:
    """Keywords/tags whose values differ (File Meta excluded; it is per-file)."""
    diffs = []
    tags = {e.tag for e in a} | {e.tag for e in b}
    for tag in sorted(tags):
        # File Meta is per file; group lengths (gggg,0000) are retired (PS3.5 7.2) and DCMTK,
        # inside Orthanc, drops them when it writes a received dataset.
        # Data Set Trailing Padding (FFFC,FFFC) has no meaning (PS3.10 7.2) and DCMTK drops it
        # on the network path.
        if tag.group == 0x0002 or tag.element == 0x0000 or tag == 0xFFFCFFFC:
            continue
        ea, eb = a.get(tag), b.get(tag)
        if ea is None or eb is None or ea.value != eb.value:
            diffs.append(f"{tag} {getattr(ea or eb, 'keyword', '')}")
    return diffs


def assert_same_instances(source: OrthancServer, dest: OrthancServer, uids: Iterable[str]) -> None:
    """Each instance at dest has every data element and the transfer syntax of the source copy.

    The reference is the source's own copy (as Orthanc hands it out), not the file loaded into
    it: Orthanc drops Data Set Trailing Padding on ingest, which is not pacsmig's doing.
    """
    for uid in sorted(uids):
        original = read(source.instance_file(uid))
        got = read(dest.instance_file(uid))
        assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, uid
        diffs = element_differences(original, got)
        assert not diffs, f"{uid}: elements changed at the destination: {diffs}"
