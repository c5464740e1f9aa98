"""Smoke tests for pacsmig.testing: real Orthanc and DCMTK processes come up,
hold data, talk DICOM to each other and go away without leaving processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest

from pacsmig.testing.corpus import (
    SAMPLE_FILE_NAMES,
    generate_corpus,
    generate_study,
    real_sample_files,
)
from pacsmig.testing.servers import (
    LOOPBACK,
    DcmqrscpServer,
    ManagedProcess,
    OrthancServer,
    StoreSCPServer,
    dcmtk_findscu,
    dcmtk_getscu,
    dcmtk_movescu,
    dcmtk_tool,
    free_port,
    orthanc_binary,
    port_accepts_echo,
    stop_servers,
)

try:
    orthanc_binary()
    for _tool in ("dcmqrscp", "storescp", "storescu", "findscu", "movescu", "getscu", "echoscu"):
        dcmtk_tool(_tool)
except FileNotFoundError as exc:  # pragma: no cover - depends on the host
    pytest.skip(f"real PACS binaries missing: {exc}", allow_module_level=True)


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _group_gone(pid: int) -> bool:
    """True if no process of the server's process group (pgid == pid) is left."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _stopped_cleanly(server: ManagedProcess) -> None:
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not server.running
    assert _group_gone(pid)
    server.stop()  # idempotent


# --------------------------------------------------------------------------- #
# corpus (no servers)
# --------------------------------------------------------------------------- #


def test_real_samples_are_distinct_and_complete() -> None:
    files = real_sample_files()
    assert 15 <= len(files) <= len(SAMPLE_FILE_NAMES)
    uids = [_sop_uid(f) for f in files]
    assert len(set(uids)) == len(uids)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID and ds.SeriesInstanceUID


def test_generate_study_is_deterministic_and_sanitised(tmp_path: Path) -> None:
    def make(out: str, seed: int = 7, study_uid: str | None = None) -> list[Path]:
        return generate_study(
            tmp_path / out,
            patient_id="../../etc/passwd",
            patient_name="EVIL/NAME^X",
            study_uid=study_uid,
            n_series=2,
            per_series=2,
            seed=seed,
        )

    first = make("a")
    second = make("b")
    assert len(first) == 4
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    for path in first:
        assert path.resolve().is_relative_to((tmp_path / "a").resolve())
        assert "passwd" not in str(path) and "EVIL" not in str(path)
    ds = pydicom.dcmread(first[-1])
    assert ds.PatientID == "../../etc/passwd"
    assert ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert (ds.SeriesNumber, ds.InstanceNumber) == (2, 2)
    assert ds.pixel_array.shape == (64, 64)
    reseeded = make("c", seed=8)
    assert _sop_uid(reseeded[0]) != _sop_uid(first[0])
    # With the study UID pinned, the seed changes pixels only.
    same = make("d", seed=8, study_uid=str(ds.StudyInstanceUID))
    assert [_sop_uid(p) for p in same] == [_sop_uid(p) for p in first]
    assert same[0].read_bytes() != first[0].read_bytes()


def test_generate_corpus_shapes(tmp_path: Path) -> None:
    files = generate_corpus(tmp_path, studies=4, n_series=1, per_series=2)
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len(files) == 8
    assert len({ds.StudyInstanceUID for ds in datasets}) == 4
    assert len({ds.PatientID for ds in datasets}) == 2
    assert len({ds.AccessionNumber for ds in datasets}) == 4
    assert {ds.Modality for ds in datasets} == {"CT", "MR", "OT"}
    sc = [ds for ds in datasets if ds.Modality == "OT"]
    assert all(ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage for ds in sc)


# --------------------------------------------------------------------------- #
# Orthanc
# --------------------------------------------------------------------------- #


def test_orthanc_stores_real_samples(tmp_path: Path) -> None:
    files = real_sample_files()
    expected = {_sop_uid(f): f for f in files}
    with OrthancServer(tmp_path / "orthanc", aet="SMOKE") as orthanc:
        assert orthanc.rest_get("/system")["DicomAet"] == "SMOKE"
        ids = {f.name: orthanc.upload(f) for f in files}
        assert all(ids.values()), [name for name, ident in ids.items() if not ident]
        assert orthanc.sop_instance_uids() == set(expected)
        assert orthanc.instance_count() == len(expected)
        assert orthanc.upload(b"certainly not DICOM") is None

        # Stored byte for byte: verification in the migration tool relies on it.
        for sop_uid, path in expected.items():
            assert orthanc.instance_file(sop_uid) == path.read_bytes()

        ct = next(f for f in files if f.name == "CT_small.dcm")
        ct_ds = pydicom.dcmread(ct, stop_before_pixels=True)
        assert orthanc.instances_of_study(str(ct_ds.StudyInstanceUID)) == {
            str(ct_ds.SOPInstanceUID)
        }
        assert orthanc.instances_of_study("1.2.3.4.5.6.7.8.9") == set()
        assert orthanc.instance_id_for("1.2.3.4.5.6.7.8.9") is None

        studies = orthanc.study_count()
        assert orthanc.delete_instance(str(ct_ds.SOPInstanceUID))
        assert not orthanc.delete_instance(str(ct_ds.SOPInstanceUID))
        assert orthanc.study_count() == studies - 1

        # Storage survives a restart on the same ports, and a crash.
        old_pid = orthanc.pid
        orthanc.restart()
        assert orthanc.pid != old_pid
        assert orthanc.instance_count() == len(expected) - 1
        orthanc.kill()
        assert not orthanc.running
        orthanc.start()
        assert orthanc.instance_count() == len(expected) - 1
        _stopped_cleanly(orthanc)


def test_orthanc_config_is_private_and_checks_called_aet(tmp_path: Path) -> None:
    orthanc = OrthancServer(tmp_path / "o", aet="CHECKED", extra_config={"LimitFindResults": 7})
    with orthanc:
        config = orthanc.config()
        assert config["Plugins"] == []
        assert config["LimitFindResults"] == 7
        assert Path(config["StorageDirectory"]).is_relative_to(tmp_path)
        # "explorer.js" is Orthanc's built-in pseudo-plugin, not a shared library.
        assert set(orthanc.rest_get("/plugins")) <= {"explorer.js"}
        echoscu = dcmtk_tool("echoscu")
        assert port_accepts_echo(echoscu, "CHECKED", orthanc.dicom_port)
        assert not port_accepts_echo(echoscu, "WRONGAET", orthanc.dicom_port)


def test_two_orthancs_know_each_other(tmp_path: Path) -> None:
    files = generate_study(tmp_path / "gen", patient_id="P1", patient_name="ONE^PATIENT")
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    expected = {_sop_uid(f) for f in files}

    a = OrthancServer(tmp_path / "a", aet="ORTHA")
    b = OrthancServer(tmp_path / "b", aet="ORTHB")
    # Ports are fixed at construction, so each can be told about the other
    # before either starts.
    a.add_modality("b", b.aet, LOOPBACK, b.dicom_port)
    b.add_modality("a", a.aet, LOOPBACK, a.dicom_port)
    with a, b:
        for f in files:
            assert a.upload(f)
        # A pushes (C-STORE SCU) to B.
        study_id = a.study_id_for(study_uid)
        assert study_id is not None
        answer = a.store_to_modality("b", [study_id])
        assert answer["FailedInstancesCount"] == 0
        assert b.sop_instance_uids() == expected

        # B pulls from A: a real C-MOVE, which A only honours because it
        # knows B's AET as a modality.
        b.clear()
        assert b.instance_count() == 0
        b.rest_post(
            "/modalities/a/move",
            {
                "Level": "Study",
                "Resources": [{"StudyInstanceUID": study_uid}],
                "TargetAet": b.aet,
                "Synchronous": True,
            },
        )
        assert b.sop_instance_uids() == expected
        assert b.instances_of_study(study_uid) == expected

        pids = [a.pid, b.pid]
        stop_servers(a, b)  # in parallel: a graceful Orthanc stop takes ~3.5 s
        assert all(pid is not None and _group_gone(pid) for pid in pids)


# --------------------------------------------------------------------------- #
# DCMTK
# --------------------------------------------------------------------------- #


def test_dcmqrscp_load_find_get_move(tmp_path: Path) -> None:
    first = generate_study(
        tmp_path / "gen", patient_id="QR1", patient_name="FIRST^PATIENT", accession="ACC1"
    )
    second = generate_study(
        tmp_path / "gen", patient_id="QR2", patient_name="SECOND^PATIENT", modality="MR"
    )
    files = first + second
    study1 = str(pydicom.dcmread(first[0], stop_before_pixels=True).StudyInstanceUID)
    uids1 = {_sop_uid(f) for f in first}

    scp = StoreSCPServer(tmp_path / "scp", aet="SINK")
    qr = DcmqrscpServer(tmp_path / "qr", aet="QRSCP", peers={"SINK": (LOOPBACK, scp.port)})
    with scp, qr:
        assert qr.load(files) == {_sop_uid(f) for f in files}

        studies = dcmtk_findscu(
            LOOPBACK,
            qr.port,
            "QRSCP",
            "STUDY",
            {"StudyInstanceUID": "", "PatientID": "", "AccessionNumber": ""},
        )
        found = {(str(d.PatientID), str(d.StudyInstanceUID)) for d in studies}
        assert ("QR1", study1) in found
        assert {pid for pid, _ in found} == {"QR1", "QR2"}
        # dcmqrscp insists on strictly hierarchical keys: an IMAGE query must
        # carry the Series Instance UID key too (empty = any).
        images = qr.findscu(
            "IMAGE", {"StudyInstanceUID": study1, "SeriesInstanceUID": "", "SOPInstanceUID": ""}
        )
        assert {str(d.SOPInstanceUID) for d in images} == uids1

        # C-GET works (needs the generated role-selection profile) ...
        got = tmp_path / "got"
        dcmtk_getscu(LOOPBACK, qr.port, "QRSCP", got, "STUDY", {"StudyInstanceUID": study1})
        assert {_sop_uid(p) for p in got.iterdir()} == uids1

        # ... and so does C-MOVE to a configured peer.
        dcmtk_movescu(LOOPBACK, qr.port, "QRSCP", "SINK", "STUDY", {"StudyInstanceUID": study1})
        assert scp.received_sop_instance_uids() == uids1

        # An unknown destination is refused rather than guessed.
        refused = dcmtk_movescu(
            LOOPBACK, qr.port, "QRSCP", "NOBODY", "STUDY", {"StudyInstanceUID": study1}, check=False
        )
        assert refused.returncode != 0
        assert "MoveDestinationUnknown" in refused.stderr
        _stopped_cleanly(qr)
        _stopped_cleanly(scp)


def test_storescp_ignore_mode_and_stop(tmp_path: Path) -> None:
    files = generate_study(
        tmp_path / "gen", patient_id="S1", patient_name="SINK^TEST", n_series=1, per_series=2
    )
    with StoreSCPServer(tmp_path / "ignore", aet="DROP", ignore=True) as scp:
        orthanc = OrthancServer(tmp_path / "o", aet="SRC")
        orthanc.add_modality("drop", scp.aet, LOOPBACK, scp.port)
        with orthanc:
            ids = [orthanc.upload(f) for f in files]
            answer = orthanc.store_to_modality("drop", [i for i in ids if i])
            assert answer["InstancesCount"] == 2
        assert scp.received_files() == []
        _stopped_cleanly(scp)


def test_startup_failure_reports_log(tmp_path: Path) -> None:
    port = free_port()
    with StoreSCPServer(tmp_path / "first", port=port):
        clash = StoreSCPServer(tmp_path / "second", port=port)
        with pytest.raises(RuntimeError, match="StoreSCPServer"):
            clash.start(timeout=5)
        assert not clash.running
        assert clash.pid is not None and _group_gone(clash.pid)


def test_dcmtk_tool_is_not_the_pynetdicom_script() -> None:
    path = dcmtk_tool("storescu")
    with open(path, "rb") as fh:
        assert fh.read(2) != b"#!"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    assert "dcmtk" in (out.stdout + out.stderr).lower()
