"""HIS/RIS corrections planned, signed off, applied and read back through Orthanc's REST API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom

from pacsmig.testing.corpus import generate_corpus
from tests.integration.conftest import Site, run_cli
from tests.integration.helpers import read

RIS_BLOCK = """\
ris:
  orders: orders.csv
  format: csv
  columns: {order_id: ORDER_ID, accession: ACC_NO, patient_id: MRN, patient_name: PAT_NAME,
            birth_date: DOB, sex: SEX, study_date: EXAM_DATE, modality: MODALITY, description: PROC_DESC}
  match:
    - rule: accession
    - rule: patient-date-modality
      date_window_days: 2
    - rule: demographics
      min_similarity: 0.92
      date_window_days: 2
  unmatched: hold
  correct: [PatientID, PatientName, PatientBirthDate, PatientSex, AccessionNumber, StudyDescription]
"""


def _studies(files: list[Path]) -> dict[str, pydicom.Dataset]:
    out: dict[str, pydicom.Dataset] = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.setdefault(str(ds.StudyInstanceUID), ds)
    return dict(sorted(out.items(), key=lambda kv: str(kv[1].StudyDate)))


def test_corrections_reach_the_destination_with_original_attributes(site: Site) -> None:
    files = generate_corpus(site.work / "gen", studies=3, per_series=2)
    for f in files:
        assert site.source.upload(f)
    (s1, d1), (s2, d2), (s3, d3) = _studies(files).items()
    # Study 1: found by accession; the RIS knows the patient under a merged MRN.
    # Study 2: no accession in the RIS; found by patient, date and modality; accession and a
    # misspelt given name corrected.
    # Study 3: no order at all: held for a person.
    family1, given1 = str(d1.PatientName).split("^")[:2]
    family2, given2 = str(d2.PatientName).split("^")[:2]
    orders = site.work / "orders.csv"
    orders.write_text(
        "ORDER_ID,ACC_NO,MRN,PAT_NAME,DOB,SEX,EXAM_DATE,MODALITY,PROC_DESC\n"
        f'O-1,{d1.AccessionNumber},MRN-NEW-1,"{family1}, {given1}",'
        f"{d1.PatientBirthDate},{d1.PatientSex},{d1.StudyDate},{d1.Modality},CT HEAD\n"
        f"O-2,RIS-ACC-2,{d2.PatientID},{family2}^{given2}X,{d2.PatientBirthDate},{d2.PatientSex},"
        f"{d2.StudyDate},{d2.Modality},\n"
    )
    spec = site.spec(extra=RIS_BLOCK)
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    doc = json.loads(plan.read_text())
    actions = {a["study_uid"]: a for a in doc["actions"]}
    assert doc["actions"][0]["study_uid"] == s3, "holds come first"
    assert actions[s3]["action"] == "hold" and actions[s3]["reason"] == "no_order"
    assert actions[s1]["match"] == {"order_id": "O-1", "rule": "accession", "score": 1.0}
    assert actions[s2]["match"]["rule"] == "patient-date-modality"
    c1 = {c["keyword"]: (c["before"], c["after"]) for c in actions[s1]["corrections"]}
    assert c1 == {
        "PatientID": (str(d1.PatientID), "MRN-NEW-1"),
        "StudyDescription": (str(d1.StudyDescription), "CT HEAD"),
    }
    c2 = {c["keyword"]: (c["before"], c["after"]) for c in actions[s2]["corrections"]}
    assert c2 == {
        "AccessionNumber": (str(d2.AccessionNumber), "RIS-ACC-2"),
        "PatientName": (str(d2.PatientName), f"{family2}^{given2}X"),
    }
    assert doc["header"]["inputs"]["orders"]["file"] == "orders.csv"

    # The same inputs plan to the same fingerprint.
    plan2 = site.work / "plan2.json"
    run_cli("plan", spec, "-o", plan2, check=0)
    assert json.loads(plan2.read_text())["fingerprint"] == doc["fingerprint"]

    review = site.work / "review.html"
    run_cli("show", plan, "--html", review, check=0)
    html = review.read_text()
    assert "MRN-NEW-1" in html and "RIS-ACC-2" in html

    run_cli("approve", plan, "--by", "reviewer", check=0)
    run_cli("apply", plan, check=0)

    moved = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    at_dest = site.dest.sop_instance_uids()
    expected = {
        u
        for u, f in moved.items()
        if str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) != s3
    }
    assert at_dest == expected, "the held study must not move"
    for uid in at_dest:
        got = read(site.dest.instance_file(uid))
        original = read(moved[uid])
        if str(got.StudyInstanceUID) == s1:
            assert (got.PatientID, got.StudyDescription) == ("MRN-NEW-1", "CT HEAD")
            assert got.AccessionNumber == original.AccessionNumber
            item = got.OriginalAttributesSequence[-1]
            assert (
                item.ModifyingSystem == "pacsmig"
                and item.ReasonForTheAttributeModification == "COERCE"
            )
            old = item.ModifiedAttributesSequence[0]
            assert (old.PatientID, old.StudyDescription) == (
                original.PatientID,
                original.StudyDescription,
            )
        else:
            assert (got.AccessionNumber, str(got.PatientName)) == (
                "RIS-ACC-2",
                f"{family2}^{given2}X",
            )
            assert got.PatientID == original.PatientID
            old = got.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
            assert (old.AccessionNumber, str(old.PatientName)) == (
                original.AccessionNumber,
                str(original.PatientName),
            )
        # Nothing else changed: pixels and every other element.
        assert got.PixelData == original.PixelData
        changed = {
            "PatientID",
            "PatientName",
            "StudyDescription",
            "AccessionNumber",
            "OriginalAttributesSequence",
            "SpecificCharacterSet",
        }
        for elem in original:
            if elem.keyword not in changed and elem.tag.group != 0x0002:
                assert got[elem.tag].value == elem.value, elem.keyword

    run_cli("verify", plan, check=0)
    report = site.work / "report.html"
    run_cli("report", plan, "-o", report, check=0)
    assert "held for review" in report.read_text()

    # Change a corrected attribute behind pacsmig's back: verify names it.
    tampered = []
    for uid in sorted(site.dest.instances_of_study(s2)):
        ds = read(site.dest.instance_file(uid))
        ds.AccessionNumber = "TAMPERED"
        buf = io.BytesIO()
        ds.save_as(buf)
        tampered.append(buf.getvalue())
    site.dest.rest_delete(f"/studies/{site.dest.study_id_for(s2)}")
    for data in tampered:
        assert site.dest.upload(data)
    out = run_cli("verify", plan, check=1).stdout
    assert "attributes" in out and "AccessionNumber" in out
