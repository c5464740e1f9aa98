"""Legacy storage as the source: odd files read, normalised and migrated, or quarantined."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from pacsmig.testing.servers import OrthancServer
from tests.integration.conftest import run_cli
from tests.integration.helpers import element_differences, read


def _sample(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(path)


def _bare(src: Path) -> bytes:
    """The data set alone: no preamble, no File Meta (as some archives store it)."""
    data = src.read_bytes()
    ds = pydicom.dcmread(src)
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return data[meta_end:]


def build_tree(root: Path) -> dict[str, Path]:
    """Odd files under root; returns SOP UID -> original file for each that must migrate."""
    (root / "raid" / "a").mkdir(parents=True)
    (root / "raid" / "b").mkdir(parents=True)
    good: dict[str, Path] = {}
    ct = _sample("CT_small.dcm")
    shutil.copy(ct, root / "raid" / "a" / "ct.dcm")
    good[str(pydicom.dcmread(ct).SOPInstanceUID)] = ct
    mr = _sample("MR_small_implicit.dcm")
    (root / "raid" / "a" / "IM0001").write_bytes(_bare(mr))
    good[str(pydicom.dcmread(mr).SOPInstanceUID)] = mr
    rt = _sample("rtplan.dcm")
    (root / "raid" / "b" / "plan.dcm.gz").write_bytes(gzip.compress(rt.read_bytes()))
    good[str(pydicom.dcmread(rt).SOPInstanceUID)] = rt
    be = _sample("ExplVR_BigEnd.dcm")
    shutil.copy(be, root / "raid" / "b" / "bigendian")
    good[str(pydicom.dcmread(be).SOPInstanceUID)] = be
    # A File Meta that names the wrong transfer syntax for its (explicit VR) data set.
    liar = pydicom.dcmread(_sample("CT_small.dcm"))
    liar.SOPInstanceUID = liar.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.8.498.4242"
    )
    liar.save_as(root / "raid" / "b" / "liar.dcm", enforce_file_format=True)
    data = (root / "raid" / "b" / "liar.dcm").read_bytes()
    (root / "raid" / "b" / "liar.dcm").write_bytes(
        data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2\x00\x00\x00", 1)
    )
    good["1.2.826.0.1.3680043.8.498.4242"] = root / "raid" / "b" / "liar.dcm"
    # What must be quarantined, never dropped silently.
    dose = _sample("rtdose.dcm").read_bytes()
    (root / "raid" / "b" / "cut.dcm").write_bytes(dose[: len(dose) * 2 // 3])
    (root / "raid" / "a" / "notes.txt").write_text("not an image\n")
    (root / "raid" / "a" / "scratch.tmp").write_text("excluded by the spec\n")
    return good


def test_file_tree_to_orthanc(tmp_path: Path) -> None:
    good = build_tree(tmp_path)
    with OrthancServer(tmp_path / "dest", aet="NEWPACS") as dest:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            "version: 1\nname: tape\nlocal: {ae_title: PACSMIG}\n"
            "source:\n  kind: filesystem\n  roots: [raid]\n  exclude: ['**/*.tmp']\n"
            f"destination: {{ae_title: NEWPACS, host: 127.0.0.1, port: {dest.dicom_port}}}\n"
        )
        plan = tmp_path / "plan.json"
        out = run_cli("plan", spec, "-o", plan, check=0).stdout
        assert "2 files quarantined" in out
        doc = json.loads(plan.read_text())
        reasons = {Path(q["path"]).name: q["reason"] for q in doc["quarantine"]}
        assert reasons == {"cut.dcm": "truncated", "notes.txt": "not_dicom"}
        assert doc["header"]["inventory"]["complete"] is True
        assert sum(a["expected"]["instances"] for a in doc["actions"]) == len(good)
        shown = run_cli("show", plan, check=0).stdout
        assert "cut.dcm" in shown and "truncated" in shown

        run_cli("apply", plan, "--auto-approve", check=0)
        assert dest.sop_instance_uids() == set(good)
        for uid, original in good.items():
            got = read(dest.instance_file(uid))
            want = pydicom.dcmread(original, force=True)
            assert element_differences(want, got) == [], uid
            assert got.file_meta.MediaStorageSOPInstanceUID == uid
        # Big endian was normalised to a syntax the destination stores as sent.
        be_uid = next(u for u, p in good.items() if p.name == "ExplVR_BigEnd.dcm")
        assert read(dest.instance_file(be_uid)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        run_cli("verify", plan, check=0)
        run_cli("report", plan, "-o", tmp_path / "r.html", check=0)
        html = (tmp_path / "r.html").read_text()
        assert "Quarantined files" in html and "cut.dcm" in html

        # Planning again (same plan file, so the same index) with nothing changed reads no
        # file and plans nothing new.
        run_cli("plan", spec, "-o", plan, check=0)
        doc2 = json.loads(plan.read_text())
        assert doc2["header"]["inventory"]["files_read"] == 0
        assert {a["action"] for a in doc2["actions"]} == {"skip"}
