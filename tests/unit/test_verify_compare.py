"""Element-by-element comparison of a destination copy with its source copy."""

from __future__ import annotations

import copy
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, JPEGLSNearLossless, RLELossless

from pacsmig.plan.model import Correction, StudyAction
from pacsmig.verify.compare import (
    CompareRules,
    LossyPlan,
    compare_instance,
    parse_lossy,
    rules_for,
    summarise,
)


def _sample(name: str) -> FileDataset:
    path = get_testdata_file(name, download=False)
    if path is None:  # pragma: no cover - pydicom-data is installed here
        pytest.skip(f"{name} not available")
    return dcmread(path)


def _reread(ds: Dataset) -> FileDataset:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue()))


def _action(**kw: object) -> StudyAction:
    return StudyAction(study_uid="1.2.3", action="migrate", reason="not_at_destination", **kw)  # type: ignore[arg-type]


def test_identical_copies_are_equal() -> None:
    ds = _sample("CT_small.dcm")
    result = compare_instance("1", ds, _reread(copy.deepcopy(ds)), CompareRules())
    assert result.equal and result.differences == ()


def test_changed_pixels_are_named_by_tag() -> None:
    ds = _sample("CT_small.dcm")
    altered = copy.deepcopy(ds)
    arr = altered.pixel_array.copy()
    arr[10, 10] += 7
    altered.PixelData = arr.tobytes()
    result = compare_instance("sop", ds, _reread(altered), CompareRules())
    assert not result.equal
    (diff,) = result.differences
    assert (diff.tag, diff.keyword) == ("(7FE0,0010)", "PixelData")
    assert "max abs error 7" in diff.found and "1 values differ" in diff.found


def test_lossless_transcode_compares_equal() -> None:
    ds = _sample("CT_small.dcm")
    transcoded = copy.deepcopy(ds)
    transcoded.compress(RLELossless, generate_instance_uid=False)
    got = _reread(transcoded)
    assert got.file_meta.TransferSyntaxUID == RLELossless
    assert got.PixelData != ds.PixelData
    assert compare_instance("sop", ds, got, CompareRules()).equal


def test_element_changes_are_listed_before_and_after() -> None:
    ds = _sample("CT_small.dcm")
    altered = copy.deepcopy(ds)
    altered.PatientName = "OTHER^NAME"
    del altered.StudyID
    altered.add_new(0x00771001, "LO", "private")
    result = compare_instance("sop", ds, _reread(altered), CompareRules())
    by_tag = {d.tag: d for d in result.differences}
    assert by_tag["(0010,0010)"].expected == str(ds.PatientName)
    assert by_tag["(0010,0010)"].found == "OTHER^NAME"
    assert by_tag["(0020,0010)"].found == "(absent)"
    assert by_tag["(0077,1001)"].expected == "(absent)"
    assert len(result.differences) == 3


def test_sequences_are_compared_item_by_item() -> None:
    ds = _sample("CT_small.dcm")
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = Sequence([Dataset(), item])
    altered = copy.deepcopy(ds)
    altered.ReferencedImageSequence[1].ReferencedSOPInstanceUID = "1.2.3.5"
    (diff,) = compare_instance("sop", ds, _reread(altered), CompareRules()).differences
    assert diff.tag == "(0008,1140)[1].(0008,1155)"
    assert diff.keyword == "ReferencedImageSequence[1].ReferencedSOPInstanceUID"
    assert (diff.expected, diff.found) == ("1.2.3.4", "1.2.3.5")


def test_planned_corrections_are_checked_not_compared() -> None:
    ds = _sample("CT_small.dcm")
    corrected = copy.deepcopy(ds)
    corrected.PatientID = "NEW-ID"
    corrected.SpecificCharacterSet = "ISO_IR 192"
    oas = Dataset()
    oas.ModifyingSystem = "pacsmig"
    corrected.OriginalAttributesSequence = Sequence([oas])
    action = _action(
        corrections=(Correction(keyword="PatientID", before=str(ds.PatientID), after="NEW-ID"),)
    )
    assert compare_instance("sop", ds, _reread(corrected), rules_for(action)).equal
    # The destination holds a value that is neither: a difference against the plan's value.
    corrected.PatientID = "THIRD"
    (diff,) = compare_instance("sop", ds, _reread(corrected), rules_for(action)).differences
    assert (diff.keyword, diff.expected, diff.found) == ("PatientID", "NEW-ID", "THIRD")


def _noisy(ds: FileDataset, amplitude: int, seed: int = 1) -> FileDataset:
    out = copy.deepcopy(ds)
    arr = out.pixel_array.astype(np.int32)
    rng = np.random.default_rng(seed)
    arr = arr + rng.integers(-amplitude, amplitude + 1, size=arr.shape)
    out.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    return _reread(out)


def test_planned_lossy_is_judged_by_tolerance() -> None:
    ds = _sample("CT_small.dcm")
    rules = CompareRules(lossy=LossyPlan(syntax=JPEGLSNearLossless, quality=2))
    close = compare_instance("sop", ds, _noisy(ds, 2), rules)
    assert close.equal and "max abs error 2" in close.note and "NEAR 2" in close.note
    far = compare_instance("sop", ds, _noisy(ds, 9), rules)
    assert not far.equal and far.differences[0].tag == "(7FE0,0010)"
    psnr_rules = CompareRules(lossy=LossyPlan(syntax=JPEG2000))
    assert compare_instance("sop", ds, _noisy(ds, 3), psnr_rules).equal
    # Unplanned, the same small change is a difference.
    assert not compare_instance("sop", ds, _noisy(ds, 2), CompareRules()).equal


def test_rules_from_the_plan() -> None:
    assert parse_lossy("") is None and parse_lossy("prefer:1.2.840.10008.1.2.4.80") is None
    lossy = parse_lossy("lossy:1.2.840.10008.1.2.4.81;quality=3")
    assert lossy == LossyPlan(syntax="1.2.840.10008.1.2.4.81", quality=3)
    rules = rules_for(_action(transcode="lossy:1.2.840.10008.1.2.4.91"))
    assert rules.lossy is not None and rules.lossy.quality is None


def test_summaries_are_bounded_and_hash_binary() -> None:
    assert summarise("x" * 200).endswith("…") and len(summarise("x" * 200)) == 64
    text = summarise(b"\x00\x01" * 1000)
    assert text.startswith("2000 bytes sha256:") and len(text) < 64
    assert summarise(None) == "(absent)"
