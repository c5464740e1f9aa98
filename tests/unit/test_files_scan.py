"""File-tree inventory on odd files built from pydicom's real test files.

Every file is checked to end where it belongs: indexed with the right fixes, or quarantined
with the right reason. Normalised output is read back with pydicom (no force) and compared,
element by element, with what pydicom reads from the original.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

import pacsmig.inventory.files as files
from pacsmig.errors import InputError
from pacsmig.inventory.files import FileInstance, ScanResult, read_normalised, scan

pytestmark = pytest.mark.unit

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


# --- building odd files -----------------------------------------------------------------------


def sample(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(path)


def raw(name: str) -> bytes:
    return sample(name).read_bytes()


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 file: what follows preamble, prefix and File Meta."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    group_length = struct.unpack("<L", data[140:144])[0]
    return data[144 + group_length :]


def meta_bytes(sop_class: str, sop_uid: str, ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta)
    return fp.getvalue()


def with_meta(name: str, ts: str) -> bytes:
    """The test file's data set behind a fresh File Meta naming ts (right or wrong)."""
    ds = pydicom.dcmread(sample(name), stop_before_pixels=True)
    body = dataset_bytes(raw(name))
    return b"\x00" * 128 + b"DICM" + meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ts) + body


def part10(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def pixel_offset(data: bytes) -> int:
    """Offset of the (7FE0,0010) element header in an explicit VR LE file."""
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    assert at > 0
    return at


def run(root: Path, tmp_path: Path, **kwargs: object) -> ScanResult:
    result = scan([root], index_path=tmp_path / "index.sqlite", **kwargs)  # type: ignore[arg-type]
    assert_accounted(result)
    return result


def assert_accounted(result: ScanResult) -> None:
    """Every file seen ends as exactly one of instance, duplicate, quarantined, DICOMDIR."""
    kept = [i.path for v in result.instances.values() for i in v]
    others = [d[2] for d in result.duplicates]
    quarantined = [q.path for q in result.quarantine]
    every = kept + others + quarantined + result.dicomdirs
    assert len(every) == len(set(every)) == result.files_seen


def by_name(result: ScanResult) -> dict[str, FileInstance]:
    return {Path(i.path).name: i for v in result.instances.values() for i in v}


def reasons(result: ScanResult) -> dict[str, str]:
    return {Path(q.path).name: q.reason for q in result.quarantine}


def pydicom_elements(source: Path | bytes) -> dict[int, object]:
    """Every data element pydicom reads (File Meta aside), as comparable values."""
    data = source if isinstance(source, bytes) else source.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ds = pydicom.dcmread(BytesIO(data), force=True)
    return {int(e.tag): e.value for e in ds}


# --- one kind of file at a time ----------------------------------------------------------------


# name -> (bytes, expected true transfer syntax, expected fixes, intact sample it holds)
def indexed_cases() -> dict[str, tuple[bytes, str, tuple[str, ...], str]]:
    ct = raw("CT_small.dcm")
    mr_implicit = raw("MR_small_implicit.dcm")
    ct_name, mr_name = "CT_small.dcm", "MR_small_implicit.dcm"
    bare = ("no_preamble", "no_file_meta")
    return {
        "plain.dcm": (ct, EXPLICIT, (), ct_name),
        "implicit.dcm": (mr_implicit, IMPLICIT, (), mr_name),
        "bare_implicit": (dataset_bytes(mr_implicit), IMPLICIT, bare, mr_name),
        "bare_explicit": (dataset_bytes(ct), EXPLICIT, bare, ct_name),
        "meta_no_preamble.dcm": (ct[128:], EXPLICIT, ("no_preamble",), ct_name),
        "ct.dcm.gz": (gzip.compress(ct), EXPLICIT, ("gzip",), ct_name),
        "gzip_no_suffix": (gzip.compress(mr_implicit), IMPLICIT, ("gzip",), mr_name),
        "bare.gz": (gzip.compress(dataset_bytes(ct)), EXPLICIT, ("gzip", *bare), ct_name),
        "big_endian.dcm": (
            raw("ExplVR_BigEnd.dcm"),
            BIG_ENDIAN,
            ("big_endian",),
            "ExplVR_BigEnd.dcm",
        ),
        "mr_big_endian.dcm": (
            raw("MR_small_bigendian.dcm"),
            BIG_ENDIAN,
            ("big_endian",),
            "MR_small_bigendian.dcm",
        ),
        "bare_big_endian": (
            raw("ExplVR_BigEndNoMeta.dcm"),
            BIG_ENDIAN,
            (*bare, "big_endian"),
            "ExplVR_BigEndNoMeta.dcm",
        ),
        "says_explicit_is_implicit.dcm": (
            with_meta(mr_name, EXPLICIT),
            IMPLICIT,
            ("wrong_transfer_syntax_in_meta",),
            mr_name,
        ),
        "says_implicit_is_explicit.dcm": (
            with_meta(ct_name, IMPLICIT),
            EXPLICIT,
            ("wrong_transfer_syntax_in_meta",),
            ct_name,
        ),
        "says_jpeg_is_native.dcm": (
            with_meta(ct_name, "1.2.840.10008.1.2.4.50"),
            EXPLICIT,
            ("wrong_transfer_syntax_in_meta",),
            ct_name,
        ),
        "jpeg2000.dcm": (raw("JPEG2000.dcm"), "1.2.840.10008.1.2.4.91", (), "JPEG2000.dcm"),
        "deflated.dcm": (raw("image_dfl.dcm"), "1.2.840.10008.1.2.1.99", (), "image_dfl.dcm"),
        # Its File Meta names another SOP Instance UID than its data set.
        "rtplan.dcm": (raw("rtplan.dcm"), IMPLICIT, ("invalid_file_meta",), "rtplan.dcm"),
        "sr.dcm": (raw("test-SR.dcm"), EXPLICIT, (), "test-SR.dcm"),
    }


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FileInstance]:
    """Each readable case scanned on its own (several are copies of one instance)."""
    out = {}
    for name, (data, _, _, _) in indexed_cases().items():
        tmp = tmp_path_factory.mktemp("case")
        write(tmp / "root", name, data)
        out[name] = by_name(run(tmp / "root", tmp))[name]
    return out


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScanResult]:
    """The unusable cases, all in one tree."""
    tmp = tmp_path_factory.mktemp("odd")
    root = tmp / "root"
    ct = raw("CT_small.dcm")
    cut = pixel_offset(ct)
    meta_end = len(ct) - len(dataset_bytes(ct))
    quarantined = {
        "text.txt": b"Patient list\nnothing to see\n",
        "empty.dcm": b"",
        "cut_in_meta.dcm": ct[:150],
        "cut_in_dataset.dcm": ct[: meta_end + 301],
        "cut_in_pixels.dcm": ct[: len(ct) - 1000],
        "cut_before_pixels.dcm": ct[:cut],
        "cut_gzip.dcm.gz": gzip.compress(ct)[:-40],
        "cut_mr_truncated.dcm": raw("MR_truncated.dcm"),
        "cut_rtplan.dcm": raw("rtplan_truncated.dcm"),
        "bad_vr.dcm": ct[: meta_end + 4] + b"\x00\x00" + ct[meta_end + 6 :],
        "bad_gzip.gz": b"\x1f\x8b\x08\x00" + bytes(range(64)),
        "no_sop_uid.dcm": without("CT_small.dcm", "SOPInstanceUID"),
        "no_series_uid.dcm": without("MR_small_implicit.dcm", "SeriesInstanceUID"),
    }
    for name, data in quarantined.items():
        write(root, name, data)
    return root, run(root, tmp)


def without(name: str, keyword: str) -> bytes:
    ds = pydicom.dcmread(sample(name))
    delattr(ds, keyword)
    return part10(ds)


@pytest.mark.parametrize("name", sorted(indexed_cases()))
def test_odd_but_readable_files_are_indexed_with_their_fixes(
    indexed: dict[str, FileInstance], name: str
) -> None:
    _, ts, fixes, _ = indexed_cases()[name]
    inst = indexed[name]
    assert inst.transfer_syntax == ts
    assert inst.fixes == fixes
    assert set(inst.fixes) <= set(files.FIX_CODES)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("text.txt", "not_dicom"),
        ("empty.dcm", "not_dicom"),
        ("cut_in_meta.dcm", "truncated"),
        ("cut_in_dataset.dcm", "truncated"),
        ("cut_in_pixels.dcm", "truncated"),
        ("cut_before_pixels.dcm", "truncated"),
        ("cut_gzip.dcm.gz", "truncated"),
        ("cut_mr_truncated.dcm", "truncated"),
        ("cut_rtplan.dcm", "truncated"),
        ("bad_vr.dcm", "corrupt"),
        ("bad_gzip.gz", "corrupt"),
        ("no_sop_uid.dcm", "missing_uid"),
        ("no_series_uid.dcm", "missing_uid"),
    ],
)
def test_unusable_files_are_quarantined_with_their_reason(
    odd_tree: tuple[Path, ScanResult], name: str, reason: str
) -> None:
    _, result = odd_tree
    assert reasons(result)[name] == reason


def test_quarantine_details_hold_no_patient_data(odd_tree: tuple[Path, ScanResult]) -> None:
    _, result = odd_tree
    ct = pydicom.dcmread(sample("CT_small.dcm"))
    secrets = {str(ct.PatientName), ct.PatientID, "CompressedSamples"}
    for entry in result.quarantine:
        assert entry.reason in files.QUARANTINE_REASONS
        assert "\n" not in entry.detail
        assert not any(s and s in entry.detail for s in secrets), entry


def test_missing_uid_detail_names_the_missing_attribute(odd_tree: tuple[Path, ScanResult]) -> None:
    _, result = odd_tree
    details = {Path(q.path).name: q.detail for q in result.quarantine}
    assert "SOP Instance UID" in details["no_sop_uid.dcm"]
    assert "Series Instance UID" in details["no_series_uid.dcm"]


@pytest.mark.parametrize("name", sorted(indexed_cases()))
def test_read_normalised_is_valid_part10_with_the_original_elements(
    indexed: dict[str, FileInstance], name: str
) -> None:
    inst = indexed[name]
    out = read_normalised(inst)
    stored = Path(inst.path).read_bytes()
    if not inst.fixes:
        assert out == stored  # nothing to fix: byte for byte
    elif inst.fixes == ("gzip",):
        assert out == gzip.decompress(stored)
    else:
        assert out[:128] == b"\x00" * 128
    assert out[128:132] == b"DICM"
    ds = pydicom.dcmread(BytesIO(out))  # no force: the File Meta must be right
    meta = ds.file_meta
    expected_ts = EXPLICIT if "big_endian" in inst.fixes else inst.transfer_syntax
    assert meta.TransferSyntaxUID == expected_ts == files.normalised_transfer_syntax(inst)
    assert meta.MediaStorageSOPInstanceUID == inst.sop_uid == ds.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == inst.sop_class_uid == ds.SOPClassUID
    assert meta.ImplementationClassUID
    original = pydicom_elements(sample(indexed_cases()[name][3]))
    normalised = {int(e.tag): e.value for e in ds}
    if "big_endian" in inst.fixes:
        # OW values (pixels, LUTs) change byte order by design; everything decoded is equal.
        swapped = {int(e.tag) for e in ds if e.VR in ("OW", "OB or OW")}
        original = {t: v for t, v in original.items() if t not in swapped}
        normalised = {t: v for t, v in normalised.items() if t not in swapped}
    assert normalised == original


def test_data_set_bytes_are_kept_when_only_the_meta_is_fixed(
    indexed: dict[str, FileInstance],
) -> None:
    for name, source in [
        ("bare_implicit", dataset_bytes(raw("MR_small_implicit.dcm"))),
        ("says_explicit_is_implicit.dcm", dataset_bytes(raw("MR_small_implicit.dcm"))),
        ("meta_no_preamble.dcm", dataset_bytes(raw("CT_small.dcm"))),
        ("bare.gz", dataset_bytes(raw("CT_small.dcm"))),
    ]:
        out = read_normalised(indexed[name])
        assert dataset_bytes(out) == source, name


def test_big_endian_is_transcoded_to_the_little_endian_twin(
    indexed: dict[str, FileInstance],
) -> None:
    out = read_normalised(indexed["mr_big_endian.dcm"])
    twin = raw("MR_small.dcm")
    normalised = pydicom.dcmread(BytesIO(out))
    little = pydicom.dcmread(BytesIO(twin))
    assert normalised.PixelData == little.PixelData
    assert np.array_equal(normalised.pixel_array, little.pixel_array)


def test_study_records_match_what_pydicom_reads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "ct.dcm", raw("CT_small.dcm"))
    write(root, "mr.dcm", raw("MR_small_implicit.dcm"))
    result = run(root, tmp_path)
    for name in ("CT_small.dcm", "MR_small_implicit.dcm"):
        ds = pydicom.dcmread(sample(name))
        study = next(s for s in result.studies if s.study_uid == ds.StudyInstanceUID)
        assert study.patient_id == ds.PatientID
        assert study.patient_name == str(ds.PatientName)
        assert study.birth_date == ds.PatientBirthDate
        assert study.sex == ds.PatientSex
        assert study.study_date == ds.StudyDate
        assert study.study_time == ds.StudyTime
        assert study.accession == ds.get("AccessionNumber", "")
        assert study.description == ds.get("StudyDescription", "")
        assert study.modalities == (ds.Modality,)
        assert study.other_patient_ids == ()
        (series,) = study.series
        assert series.series_uid == ds.SeriesInstanceUID
        assert series.modality == ds.Modality
        assert series.series_number == str(ds.SeriesNumber)
        assert series.description == ds.get("SeriesDescription", "")
        assert series.instance_count == 1
        (inst,) = result.instances[study.study_uid]
        assert inst.sop_uid == ds.SOPInstanceUID
        assert inst.instance_number == str(ds.InstanceNumber)


def test_copies_in_other_encodings_are_duplicates_not_conflicts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cases = indexed_cases()
    ct_copies = (
        "plain.dcm",
        "bare_explicit",
        "meta_no_preamble.dcm",
        "ct.dcm.gz",
        "bare.gz",
        "says_implicit_is_explicit.dcm",
        "says_jpeg_is_native.dcm",
    )
    for name in ct_copies:
        write(root, name, cases[name][0])
    # MR_small in three encodings (its explicit copy carries trailing padding, no content).
    write(root, "mr_explicit.dcm", raw("MR_small.dcm"))
    write(root, "mr_implicit.dcm", raw("MR_small_implicit.dcm"))
    write(root, "mr_big_endian.dcm", raw("MR_small_bigendian.dcm"))
    result = run(root, tmp_path)
    assert not result.conflicts and not result.quarantine
    kept = sorted(Path(i.path).name for v in result.instances.values() for i in v)
    assert kept == ["bare.gz", "mr_big_endian.dcm"]  # the smallest path of each
    copies = sorted(Path(other).name for _, _, other in result.duplicates)
    assert copies == sorted(set(ct_copies) - {"bare.gz"} | {"mr_explicit.dcm", "mr_implicit.dcm"})


@pytest.mark.parametrize(
    "name",
    [
        "chrGerm.dcm",
        "chrFren.dcm",
        "chrRuss.dcm",
        "chrGreek.dcm",
        "chrX1.dcm",
        "chrX2.dcm",
        "chrH31.dcm",
        "chrH32.dcm",
        "chrI2.dcm",
        "chrJapMulti.dcm",
        "chrKoreanMulti.dcm",
    ],
)
def test_names_are_decoded_with_the_specific_character_set(tmp_path: Path, name: str) -> None:
    (path,) = get_charset_files(name)
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        # Some of these samples are images stripped of their pixels, which the scan rightly
        # refuses; as Basic Text SR their names are read all the same.
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        for keyword in ("Rows", "Columns"):
            if keyword in ds:
                delattr(ds, keyword)
    write(tmp_path / "root", name, part10(ds))
    inst = by_name(run(tmp_path / "root", tmp_path))[name]
    assert inst.patient_name == str(pydicom.dcmread(path).PatientName)


# --- duplicates, conflicts and patients ----------------------------------------------------------


def test_identical_copies_keep_the_smallest_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ct = raw("CT_small.dcm")
    write(root, "raid/b/ct.dcm", ct)
    write(root, "raid/a/ct.dcm", ct)
    write(root, "tape/ct.dcm", ct)
    result = run(root, tmp_path)
    (inst,) = [i for v in result.instances.values() for i in v]
    assert inst.path == str(root / "raid/a/ct.dcm")
    assert result.duplicates == [
        (inst.sop_uid, inst.path, str(root / "raid/b/ct.dcm")),
        (inst.sop_uid, inst.path, str(root / "tape/ct.dcm")),
    ]
    assert not result.conflicts and not result.quarantine
    assert result.studies[0].instance_count == 1


def test_same_sop_uid_with_other_content_holds_the_study(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    write(root, "a/ct.dcm", part10(ds))
    ds.ImageComments = "re-windowed copy"
    write(root, "b/ct.dcm", part10(ds))
    result = run(root, tmp_path)
    (text,) = result.conflicts[ds.StudyInstanceUID]
    assert str(root / "a/ct.dcm") in text and str(root / "b/ct.dcm") in text
    assert reasons(result) == {"ct.dcm": "duplicate_conflict"}
    assert result.quarantine[0].path == str(root / "b/ct.dcm")
    assert not result.duplicates
    assert result.studies[0].instance_count == 1


def test_one_study_under_two_patient_ids_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    first_id = ds.PatientID
    write(root, "a.dcm", part10(ds))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5.6.7")
    ds.PatientID = "OTHER-7"
    write(root, "b.dcm", part10(ds))
    (study,) = run(root, tmp_path).studies
    assert study.other_patient_ids == tuple(sorted({first_id, "OTHER-7"}))
    assert study.patient_id == first_id  # from the first file by path, as C-FIND's first row
    assert study.instance_count == 2


# --- DICOMDIR media --------------------------------------------------------------------------------


def copy_media(dest: Path) -> Path:
    """pydicom's DICOMDIR test set: the DICOMDIR and the folders it references."""
    source = sample("DICOMDIR").parent
    dest.mkdir(parents=True)
    shutil.copy(source / "DICOMDIR", dest / "DICOMDIR")
    for folder in ("77654033", "98892001", "98892003"):
        shutil.copytree(source / folder, dest / folder)
    return dest


def referenced(dicomdir: Path) -> list[str]:
    ds = pydicom.dcmread(dicomdir)
    return sorted(
        "/".join(r.ReferencedFileID) for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r
    )


def test_dicomdir_media_is_read_through_its_records(tmp_path: Path) -> None:
    media = copy_media(tmp_path / "cd")
    refs = referenced(media / "DICOMDIR")
    # The include globs match none of the media's extension-less names: the DICOMDIR's
    # records still bring every referenced file in.
    result = run(media, tmp_path, include=["**/*.dcm", "DICOMDIR"])
    assert result.dicomdirs == [str(media / "DICOMDIR")]
    assert not result.quarantine
    read = {i.path for v in result.instances.values() for i in v} | {
        d[2] for d in result.duplicates
    }
    assert read == {str(media / r) for r in refs}
    assert result.files_read == len(refs) + 1
    # The index remembers what the DICOMDIR lists: nothing is read again.
    again = run(media, tmp_path, include=["**/*.dcm", "DICOMDIR"])
    assert again.files_read == 0
    assert again.instances == result.instances and again.dicomdirs == result.dicomdirs


def test_dicomdir_names_are_matched_as_mounted_media_show_them(tmp_path: Path) -> None:
    media = copy_media(tmp_path / "cd")
    refs = referenced(media / "DICOMDIR")
    # Mounted ISO 9660 media may show lower case names and ';1' version suffixes.
    (media / "77654033" / "CR1").rename(media / "77654033" / "cr1")
    (media / "77654033" / "CR2" / "6247").rename(media / "77654033" / "CR2" / "6247;1")
    gone = media / next(r for r in refs if r.startswith("98892001/"))
    gone.unlink()
    result = run(media, tmp_path)
    missing = [q for q in result.quarantine if q.reason == "unreadable"]
    assert [q.path for q in missing] == [str(gone)]
    assert "DICOMDIR" in missing[0].detail
    seen = result.files_seen - len(result.dicomdirs) - len(missing)
    assert seen == len(refs) - 1


def test_dicomdir_variants_are_not_quarantined(tmp_path: Path) -> None:
    source = sample("DICOMDIR").parent
    root = tmp_path / "root"
    root.mkdir()
    for name in ("DICOMDIR-implicit", "DICOMDIR-bigEnd", "DICOMDIR-empty.dcm"):
        shutil.copy(source / name, root / name)
    result = run(root, tmp_path)
    assert len(result.dicomdirs) == 3
    # Their records point at folders not copied here.
    assert {q.reason for q in result.quarantine} <= {"unreadable"}


# --- include / exclude ------------------------------------------------------------------------------


def test_globs_select_files_relative_to_each_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ct = raw("CT_small.dcm")
    for rel in ("a.dcm", "b.tmp", "sub/c.dcm", "sub/d.tmp", "sub/deep/e.dcm", "other/f.dcm"):
        write(root, rel, ct)

    def seen(**kwargs: object) -> set[str]:
        result = scan([root], index_path=tmp_path / "i.sqlite", **kwargs)  # type: ignore[arg-type]
        paths = [i.path for v in result.instances.values() for i in v]
        paths += [d[2] for d in result.duplicates] + [q.path for q in result.quarantine]
        return {os.path.relpath(p, root) for p in paths}

    assert seen() == {"a.dcm", "b.tmp", "sub/c.dcm", "sub/d.tmp", "sub/deep/e.dcm", "other/f.dcm"}
    assert seen(exclude=["**/*.tmp"]) == {"a.dcm", "sub/c.dcm", "sub/deep/e.dcm", "other/f.dcm"}
    assert seen(include=["sub/**"]) == {"sub/c.dcm", "sub/d.tmp", "sub/deep/e.dcm"}
    assert seen(include=["*.dcm"]) == {"a.dcm"}
    assert seen(include=["**/*.dcm"], exclude=["sub/**", "other/?.dcm"]) == {"a.dcm"}
    assert seen(include=["sub/*/[a-e].dcm"]) == {"sub/deep/e.dcm"}


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "real/ct.dcm", raw("CT_small.dcm"))
    (root / "real" / "loop").symlink_to(root)
    (root / "dangling.dcm").symlink_to(root / "nowhere.dcm")
    result = run(root, tmp_path)
    assert sum(len(v) for v in result.instances.values()) == 1
    assert reasons(result) == {"dangling.dcm": "unreadable"}


# --- the index ----------------------------------------------------------------------------------------


def many(root: Path, n: int) -> list[Path]:
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    out = []
    for i in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(f"1.2.826.0.1.99.{i}")
        ds.SeriesInstanceUID = UID(f"1.2.826.0.1.98.{i % 3}")
        out.append(write(root, f"s{i % 3}/im{i:03d}.dcm", part10(ds)))
    return out


def test_rescan_reads_only_new_or_changed_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    paths = many(root, 12)
    first = run(root, tmp_path)
    assert first.files_read == first.files_seen == 12
    again = run(root, tmp_path)
    assert again.files_read == 0
    assert again.studies == first.studies and again.instances == first.instances

    st = paths[3].stat()
    os.utime(paths[3], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = run(root, tmp_path)
    assert touched.files_read == 1 and touched.files_seen == 12

    write(root, "late/new.dcm", raw("CT_small.dcm"))
    added = run(root, tmp_path)
    assert added.files_read == 1 and added.files_seen == 13

    paths[0].unlink()
    removed = run(root, tmp_path)
    assert removed.files_read == 0 and removed.files_seen == 12
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        indexed = {r[0] for r in con.execute("SELECT path FROM files")}
    assert str(paths[0]) not in indexed and len(indexed) == 12


def test_progress_counts_the_files_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    many(root, 70)
    calls: list[tuple[int, int]] = []
    scan(
        [root],
        index_path=tmp_path / "i.sqlite",
        workers=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls and calls[-1] == (70, 70)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_quarantined_files_are_remembered_too(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "notes.txt", b"hello")
    assert reasons(run(root, tmp_path)) == {"notes.txt": "not_dicom"}
    again = run(root, tmp_path)
    assert again.files_read == 0 and reasons(again) == {"notes.txt": "not_dicom"}


def test_worker_processes_give_the_same_result(tmp_path: Path) -> None:
    root = tmp_path / "root"
    many(root, 80)
    write(root, "bad/cut.dcm", raw("CT_small.dcm")[:5000])
    alone = scan([root], index_path=tmp_path / "a.sqlite", workers=1)
    pooled = scan([root], index_path=tmp_path / "b.sqlite", workers=2)
    assert pooled == alone
    assert pooled.files_read == 81 and reasons(pooled) == {"cut.dcm": "truncated"}


def test_instance_records_from_the_index_equal_fresh_ones(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "ct.dcm.gz", gzip.compress(raw("CT_small.dcm")))
    inst = by_name(run(root, tmp_path))["ct.dcm.gz"]
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        (row,) = con.execute("SELECT * FROM files").fetchall()
    rebuilt = files._instance(row)
    assert rebuilt == inst
    assert rebuilt == FileInstance(
        **{name: getattr(inst, name) for name in FileInstance.__dataclass_fields__}
    )
    assert hash(rebuilt) == hash(inst)


def test_an_unusable_index_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "index.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(InputError, match="index"):
        scan([tmp_path], index_path=tmp_path / "index.sqlite")


# --- reusing the last result ------------------------------------------------------------------------

# The media's files have no extension: only their DICOMDIR brings them in.
SELECTION = {"include": ["**/*.dcm", "**/*.txt", "**/DICOMDIR"]}


def rich_tree(root: Path) -> dict[str, Path]:
    """Instances, an identical copy, a conflicting copy, unusable files and DICOMDIR media."""
    paths = {f"im{i}": p for i, p in enumerate(many(root / "series", 6))}
    ct = raw("CT_small.dcm")
    paths["ct"] = write(root, "raid/ct.dcm", ct)
    paths["copy"] = write(root, "tape/ct.dcm", ct)
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    paths["mr"] = write(root, "raid/mr.dcm", part10(ds))
    ds.ImageComments = "re-windowed copy"
    paths["conflict"] = write(root, "tape/mr.dcm", part10(ds))
    paths["text"] = write(root, "notes.txt", b"nothing to see")
    paths["cut"] = write(root, "raid/cut.dcm", ct[:5000])
    media = copy_media(root / "cd")
    paths["referenced"] = media / referenced(media / "DICOMDIR")[0]
    return paths


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per scan that rebuilt its result (the others returned the last one)."""
    calls: list[int] = []
    real = files._scan

    def counted(*args: object) -> object:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "_scan", counted)
    return calls


def unread(result: ScanResult) -> ScanResult:
    return dataclasses.replace(result, files_read=0)


def rebuilt(root: Path, tmp_path: Path) -> ScanResult:
    """A scan from nothing: a fresh index, every file read."""
    index = tmp_path / f"fresh-{len(list(tmp_path.glob('fresh-*')))}.sqlite"
    return unread(scan([root], index_path=index, **SELECTION))  # type: ignore[arg-type]


def test_an_unchanged_rescan_returns_the_last_result(tmp_path: Path, rebuilds: list[int]) -> None:
    root = tmp_path / "root"
    rich_tree(root)
    first = run(root, tmp_path, **SELECTION)
    assert first.duplicates and first.conflicts and first.dicomdirs and first.quarantine
    assert len(rebuilds) == 1

    again = run(root, tmp_path, **SELECTION)
    assert len(rebuilds) == 1  # reused
    assert again == unread(first)
    # A forced rebuild on the same index (the kept result dropped) gives the very same value...
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute("DELETE FROM scan_cache")
    forced = run(root, tmp_path, **SELECTION)
    assert len(rebuilds) == 2
    assert forced == again
    # ...and so does a scan from nothing.
    assert rebuilt(root, tmp_path) == again


def touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))


def regrow(path: Path) -> None:
    """Other content, one byte longer, under the same mtime."""
    st = path.stat()
    path.write_bytes(path.read_bytes() + b"\0")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# change -> files it makes the scan read
CHANGES: dict[str, tuple[Callable[[Path, dict[str, Path]], object], int]] = {
    "instance touched by 1 ns": (lambda root, p: touch(p["im1"]), 1),
    "instance one byte longer, same mtime": (lambda root, p: regrow(p["im2"]), 1),
    "instance added": (lambda root, p: write(root, "late/new.dcm", raw("MR_small.dcm")), 1),
    "instance removed": (lambda root, p: p["im3"].unlink(), 0),
    "identical copy touched": (lambda root, p: touch(p["copy"]), 1),
    "identical copy removed": (lambda root, p: p["copy"].unlink(), 0),
    "conflicting copy removed": (lambda root, p: p["conflict"].unlink(), 0),
    "quarantined file touched": (lambda root, p: touch(p["text"]), 1),
    "file a DICOMDIR references touched": (lambda root, p: touch(p["referenced"]), 1),
    "file a DICOMDIR references removed": (lambda root, p: p["referenced"].unlink(), 0),
    "broken link added": (lambda root, p: (root / "gone.dcm").symlink_to(root / "nowhere"), 0),
    "empty folder added": (lambda root, p: (root / "raid" / "empty").mkdir(), 0),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_single_change_rebuilds_the_result(
    tmp_path: Path, rebuilds: list[int], change: str
) -> None:
    root = tmp_path / "root"
    paths = rich_tree(root)
    run(root, tmp_path, **SELECTION)
    run(root, tmp_path, **SELECTION)
    assert len(rebuilds) == 1

    make, read = CHANGES[change]
    make(root, paths)
    changed = run(root, tmp_path, **SELECTION)
    assert len(rebuilds) == 2
    assert changed.files_read == read
    # The rebuilt result is kept in turn.
    assert run(root, tmp_path, **SELECTION) == unread(changed)
    assert len(rebuilds) == 2
    assert unread(changed) == rebuilt(root, tmp_path)


def test_files_outside_the_selection_do_not_matter(tmp_path: Path, rebuilds: list[int]) -> None:
    root = tmp_path / "root"
    rich_tree(root)
    first = run(root, tmp_path, **SELECTION)
    write(root, "raid/scratch.tmp", b"not selected")
    assert run(root, tmp_path, **SELECTION) == unread(first)
    assert len(rebuilds) == 1
    # Other parameters are another scan: never the kept result of these.
    widened = run(root, tmp_path)
    assert len(rebuilds) == 2
    assert "scratch.tmp" in reasons(widened)


def test_any_other_write_to_the_index_drops_the_kept_result(
    tmp_path: Path, rebuilds: list[int]
) -> None:
    root = tmp_path / "root"
    paths = many(root, 6)
    first = run(root, tmp_path)
    # An older pacsmig or a hand edit, unaware of the kept result.
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute("DELETE FROM files WHERE path = ?", (str(paths[2]),))
    again = run(root, tmp_path)
    assert len(rebuilds) == 2
    assert again.files_read == 1
    assert unread(again) == unread(first)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x05 not a pickle",
        pickle.dumps((1, "x")),
        # Unpickling it would call a function: refused, never run.
        pickle.dumps(print),
    ],
)
def test_a_damaged_kept_result_is_rebuilt(tmp_path: Path, rebuilds: list[int], blob: bytes) -> None:
    root = tmp_path / "root"
    many(root, 6)
    first = run(root, tmp_path)
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute("UPDATE scan_cache SET result = ?", (blob,))
    again = run(root, tmp_path)
    assert len(rebuilds) == 2
    assert again == unread(first)


def test_a_result_too_large_to_keep_is_rebuilt_each_time(
    tmp_path: Path, rebuilds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = files._open_index

    def small_values(index_path: Path) -> sqlite3.Connection:
        con = real(index_path)
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        return con

    monkeypatch.setattr(files, "_open_index", small_values)
    root = tmp_path / "root"
    many(root, 6)
    first = run(root, tmp_path)
    again = run(root, tmp_path)
    assert len(rebuilds) == 2
    assert again == unread(first)


@pytest.mark.parametrize("failing", ["digest", "comparison", "every read"])
def test_a_result_resting_on_a_passing_failure_is_not_kept(
    tmp_path: Path, rebuilds: list[int], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A copy that cannot be read for a moment: this scan decides without it, the next retries."""
    root = tmp_path / "root"
    # One instance in two encodings: other data set bytes, the same content.
    write(root, "a/mr.dcm", raw("MR_small.dcm"))
    copy = str(write(root, "b/mr.dcm", raw("MR_small_implicit.dcm")))
    busy = files._Unavailable(f"cannot read {copy}: device busy")
    real_digest, real_read, real_load = files._digest_one, files.read_normalised, files._load

    def digest(item: tuple[str, int, int]) -> tuple[str, str | None, bool]:
        return (copy, None, False) if item[0] == copy else real_digest(item)

    def read(inst: FileInstance) -> bytes:
        if inst.path == copy:
            raise busy
        return real_read(inst)

    def load(path: str, size: int, mtime_ns: int) -> object:
        if path == copy:
            raise busy
        return real_load(path, size, mtime_ns)

    with monkeypatch.context() as patched:
        if failing == "digest":
            patched.setattr(files, "_digest_one", digest)
        elif failing == "comparison":
            patched.setattr(files, "read_normalised", read)
        else:
            patched.setattr(files, "_load", load)
        first = run(root, tmp_path)
        if failing == "digest":  # compared element by element instead
            assert not first.quarantine and len(first.duplicates) == 1
        else:  # not provably the same: held for now
            assert reasons(first) == {"mr.dcm": "duplicate_conflict"}
        assert run(root, tmp_path) == unread(first)
        assert len(rebuilds) == 2

    healed = run(root, tmp_path)
    assert not healed.quarantine and len(healed.duplicates) == 1
    assert run(root, tmp_path) == healed
    assert len(rebuilds) == 3


def test_a_file_that_changed_while_read_is_read_again(
    tmp_path: Path, rebuilds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    paths = many(root, 6)
    changing = str(paths[4])
    real = files._read_one

    def read_after_a_write(path: str) -> files.Row:
        row = real(path)
        # As if the file were written to between the walk and the read.
        return (row[0], row[1], row[2] + 1, *row[3:]) if path == changing else row

    with monkeypatch.context() as patched:
        patched.setattr(files, "_read_one", read_after_a_write)
        first = run(root, tmp_path)
    # The walk's (size, mtime_ns) of that file is not the indexed one: read again, not reused.
    again = run(root, tmp_path)
    assert len(rebuilds) == 2
    assert again.files_read == 1
    assert {i.mtime_ns for i in by_name(again).values()} != {
        i.mtime_ns for i in by_name(first).values()
    }
    assert run(root, tmp_path) == unread(again)
    assert len(rebuilds) == 2
    assert unread(scan([root], index_path=tmp_path / "fresh.sqlite")) == unread(again)


def test_an_excluded_reference_that_goes_missing_is_noticed(
    tmp_path: Path, rebuilds: list[int]
) -> None:
    root = tmp_path / "root"
    media = copy_media(root / "cd")
    ref = referenced(media / "DICOMDIR")[0]
    # Excluded from the walk and from what the DICOMDIR brings in: neither stats it.
    selection = {"exclude": [f"**/{ref}"]}
    first = run(root, tmp_path, **selection)
    assert str(media / ref) not in {i.path for v in first.instances.values() for i in v}
    assert run(root, tmp_path, **selection) == unread(first)
    assert len(rebuilds) == 1

    (media / ref).unlink()
    gone = run(root, tmp_path, **selection)
    assert len(rebuilds) == 2
    assert reasons(gone) == {Path(ref).name: "unreadable"}
    fresh = scan([root], index_path=tmp_path / "fresh.sqlite", **selection)  # type: ignore[arg-type]
    assert unread(fresh) == gone


class CountingPool(files._Pool):
    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.tasks = 0

    def submit_walk(self, *args: object) -> Future[files._Part]:
        self.tasks += 1
        return super().submit_walk(*args)  # type: ignore[arg-type]


@pytest.fixture
def two_workers() -> Iterator[CountingPool]:
    pool = CountingPool(2)
    try:
        yield pool
    finally:
        pool.close()


@pytest.mark.parametrize("include", [["**/*"], ["**/*.dcm"]])
def test_a_walk_shared_among_workers_finds_what_one_process_finds(
    tmp_path: Path, two_workers: CountingPool, include: list[str]
) -> None:
    root = tmp_path / "root"
    for i in range(files._SPLIT_FOLDERS + 6):
        write(root, f"d{i:02d}/sub/f.dcm", b"x" * i)
        write(root, f"d{i:02d}/notes.txt", b"y")
    (root / "d03" / "gone.dcm").symlink_to(root / "nowhere")
    (root / "d04" / "locked").mkdir(mode=0)
    try:
        tree, extra = files._walk([str(root)], include, [], two_workers, lambda: "meanwhile")
        alone = files._walk_roots([str(root)], files._matcher(include), None)
    finally:
        (root / "d04" / "locked").chmod(0o755)
    assert extra == "meanwhile"
    assert two_workers.tasks == files._WALK_TASKS
    assert tree.files() == alone.files() and len(tree.files()) == (files._SPLIT_FOLDERS + 6) * (
        2 if include == ["**/*"] else 1
    )
    assert sorted(tree.problems, key=str) == sorted(alone.problems, key=str)
    assert {q.path for q in tree.problems} == {str(root / "d03" / "gone.dcm")} | (
        set() if os.geteuid() == 0 else {str(root / "d04" / "locked")}
    )
    assert tree.digest == alone.digest


def wide(root: Path) -> None:
    """Enough folders on the first level for the walk to be shared at once."""
    for i in range(files._SPLIT_FOLDERS + 6):
        write(root, f"d{i:02d}/f.dcm", b"x")
    write(root, "d07/sub/g.dcm", b"y")


def deep(root: Path) -> None:
    """Too few folders on the first level: this process lists the second before sharing."""
    for i in range(10):
        for j in range(files._SPLIT_FOLDERS // 8):
            write(root, f"a{i}/s{j}/f.dcm", b"x")


# layout, links (from, to) and a path the one-process walk lists (in name order, the first of
# two ways in wins): two tasks would both walk the folder, or one would skip it as met already.
FOLDERS_MET_TWICE = {
    "link into another task's folder": (wide, [("d01/also", "d07/sub")], "d01/also/g.dcm"),
    "link to a folder listed before sharing": (deep, [("a0/s0/also", "a5/s3")], "a0/s0/also/f.dcm"),
    "loop back to the root": (wide, [("d02/loop", "")], "d07/sub/g.dcm"),
}


@pytest.mark.parametrize("case", sorted(FOLDERS_MET_TWICE))
def test_a_shared_walk_that_meets_a_folder_twice_walks_again_in_order(
    tmp_path: Path, two_workers: CountingPool, case: str
) -> None:
    root = tmp_path / "root"
    layout, links, listed = FOLDERS_MET_TWICE[case]
    layout(root)
    for link, target in links:
        (root / link).symlink_to(root / target)

    tree, _ = files._walk([str(root)], ["**/*"], [], two_workers, lambda: None)
    alone = files._walk_roots([str(root)], None, None)
    assert two_workers.tasks == files._WALK_TASKS
    assert str(root / listed) in alone.files()
    assert tree.files() == alone.files()
    assert tree.digest == alone.digest


def test_the_tree_digest_covers_names_sizes_mtimes_and_problems(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = write(root, "a/f.dcm", b"xy")
    write(root, "b/g.dcm", b"z")

    def digest() -> str:
        return files._walk_roots([str(root)], None, None).digest

    seen = {digest()}
    touch(path)
    seen.add(digest())
    st = path.stat()
    path.write_bytes(b"xyz")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    seen.add(digest())
    path.rename(root / "a" / "h.dcm")
    seen.add(digest())
    (root / "b" / "gone.dcm").symlink_to(root / "nowhere")
    seen.add(digest())
    assert len(seen) == 5
    assert digest() in seen


# --- read_normalised refuses what it did not index ----------------------------------------------------


def test_read_normalised_refuses_a_file_changed_since_indexing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = write(root, "ct.dcm", raw("CT_small.dcm"))
    inst = by_name(run(root, tmp_path))["ct.dcm"]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    with pytest.raises(InputError) as info:
        read_normalised(inst)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "changed" in message
    assert "CompressedSamples" not in message

    path.write_bytes(raw("CT_small.dcm")[:1000])
    with pytest.raises(InputError, match="changed"):
        read_normalised(inst)
    path.unlink()
    with pytest.raises(InputError, match="cannot read"):
        read_normalised(inst)


# --- globs and names in isolation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*", "a", True),
        ("**/*", "a/b/c.dcm", True),
        ("**/*.tmp", "x.tmp", True),
        ("**/*.tmp", "a/b/x.tmp", True),
        ("**/*.tmp", "a/b/x.tmp.dcm", False),
        ("*.dcm", "a/b.dcm", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**", "a/x/y", True),
        ("?.dcm", "ab.dcm", False),
        ("[!x]*.dcm", "y1.dcm", True),
        ("[!x]*.dcm", "x1.dcm", False),
        ("IM*", "im1", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    matcher = files._matcher([pattern])
    assert (matcher is None or matcher(path)) == matches
