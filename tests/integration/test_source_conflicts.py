"""Conflicts at the source are held or refused for a person, never silently merged."""

from __future__ import annotations

import io
import json

import pydicom
from pydicom.uid import generate_uid

from pacsmig.testing.corpus import generate_study
from tests.integration.conftest import Site, run_cli


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_same_study_under_two_patients_is_held(site: Site) -> None:
    files = generate_study(
        site.work / "a", patient_id="P1", patient_name="ONE^A", per_series=1, n_series=1
    )
    ds = pydicom.dcmread(files[0])
    assert site.source.upload(files[0])
    other = pydicom.dcmread(files[0])
    other.PatientID = "P2"
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["x"]
    )
    assert site.source.upload(_bytes(other))
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    doc = json.loads(plan.read_text())
    [action] = [a for a in doc["actions"] if a["study_uid"] == ds.StudyInstanceUID]
    assert (action["action"], action["reason"]) == ("hold", "patient_id_conflict")
    run_cli("apply", plan, "--auto-approve", check=0)
    assert site.dest.instance_count() == 0


def test_same_sop_uid_with_different_content_is_refused(site: Site) -> None:
    files = generate_study(
        site.work / "a", patient_id="P1", patient_name="ONE^A", per_series=1, n_series=1
    )
    first = pydicom.dcmread(files[0])
    twin = pydicom.dcmread(files[0])
    twin.StudyInstanceUID = generate_uid(entropy_srcs=["twin-study"])
    twin.SeriesInstanceUID = generate_uid(entropy_srcs=["twin-series"])
    twin.StudyDate = "19000101"  # planned after the first (newest first is the default order)
    twin.PixelData = bytes(len(twin.PixelData))
    assert site.source.upload(files[0]) and site.source.upload(_bytes(twin))
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    out = run_cli("apply", plan, "--auto-approve", check=1).stdout
    assert "refused: 1 studies: sop_uid_conflict" in out
    got = pydicom.dcmread(io.BytesIO(site.dest.instance_file(str(first.SOPInstanceUID))))
    assert got.StudyInstanceUID == first.StudyInstanceUID and got.PixelData == first.PixelData
