"""apply_corrections on real files: exactly the planned attributes change, nothing else.

The checks here do not reuse the module's own comparison: every element of the input and the
output is flattened with pydicom (recursively, through sequences) and compared value by value.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zlib
from collections.abc import Iterator, Sequence
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

import pacsmig.apply.process as process
from pacsmig.apply.process import (
    CorrectionError,
    apply_corrections,
    corrected_value,
    dicom_datetime,
    validate_corrections,
)
from pacsmig.errors import InputError
from pacsmig.plan.model import Correction

pytestmark = pytest.mark.unit

WHEN = dt.datetime(2024, 3, 5, 14, 7, 9, 120000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
WHEN_DT = "20240305140709.120000+0100"

CHARSET_FILES = ("chrRuss.dcm", "chrH31.dcm", "chrX1.dcm", "chrX2.dcm", "chrSQEncoding1.dcm")
SAMPLES = (
    "CT_small.dcm",  # Explicit VR LE, ISO_IR 100
    "MR_small_implicit.dcm",  # Implicit VR LE, no Specific Character Set
    "ExplVR_BigEnd.dcm",  # Explicit VR Big Endian, no PatientID at all
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian, native OW pixel data
    "JPEG2000.dcm",  # JPEG 2000, encapsulated
    "US1_J2KR.dcm",  # JPEG 2000 lossless (pydicom-data)
    "JPEG-LL.dcm",  # JPEG lossless (pydicom-data)
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, ISO_IR 192
    "OBXXXX1A_rle.dcm",  # RLE lossless (pydicom-data)
    "image_dfl.dcm",  # Deflated Explicit VR LE
    "rtplan.dcm",  # no pixel data, nested sequences, implicit VR
    "MR-SIEMENS-DICOM-WithOverlays.dcm",  # private tags, overlays (pydicom-data)
    "test-SR.dcm",  # SR: text deep inside nested sequences
    *CHARSET_FILES,
)

ASCII_CORRECTIONS = (
    Correction(keyword="PatientID", before="", after="MRN-0042"),
    Correction(keyword="PatientName", before="", after="DOE^JANE^Q^^"),
    Correction(keyword="AccessionNumber", before="", after="ACC77"),
    Correction(keyword="PatientBirthDate", before="", after="19700102"),
    Correction(keyword="StudyDescription", before="", after="CT CHEST W/O CONTRAST"),
)


# ---------------------------------------------------------------------------------------------
# helpers (independent of the module under test)
# ---------------------------------------------------------------------------------------------


def sample_path(name: str) -> str:
    path: object
    if name in CHARSET_FILES:
        found = get_charset_files(name)
        path = found[0] if found else None
    else:
        path = get_testdata_file(name, download=False)
    if not isinstance(path, str):
        pytest.skip(f"{name} is not installed")
    return path


@functools.cache
def sample(name: str) -> bytes:
    with open(sample_path(name), "rb") as fh:
        return fh.read()


def read(data: bytes) -> FileDataset:
    return pydicom.dcmread(BytesIO(data))


def norm(value: Any) -> Any:
    if value is None or (isinstance(value, str | bytes) and not value):
        return None
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, MultiValue | list | tuple):
        return tuple(norm(v) for v in value)
    if isinstance(value, bytes | int):
        return value
    return str(value)


def flatten(ds: Dataset, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, (VR, normalised value)) for every element, recursing into every sequence item."""
    for elem in ds:
        path = (*prefix, int(elem.tag))
        if elem.VR == "SQ":
            yield path, ("SQ", len(elem.value))
            for i, item in enumerate(elem.value):
                yield from flatten(item, (*path, i))
        else:
            yield path, (elem.VR, norm(elem.value))


def comparable(ds: Dataset, skip: set[int]) -> dict[tuple[Any, ...], Any]:
    out = {}
    for path, value in flatten(ds):
        top = path[0]
        if top in skip:
            continue
        if any(isinstance(t, int) and t > 0xFFFF and t & 0xFFFF == 0 for t in path[::2]):
            continue  # retired group lengths (gggg,0000): pydicom does not write them
        out[path] = value
    return out


def tags_of(corrections: Sequence[Correction]) -> set[int]:
    out = set()
    for c in corrections:
        tag = pydicom.datadict.tag_for_keyword(c.keyword)
        assert tag is not None
        out.add(tag)
    return out


def assert_only_planned_changes(
    data: bytes, out: bytes, corrections: Sequence[Correction], *, charset_may_change: bool
) -> None:
    before, after = read(data), read(out)
    skip = tags_of(corrections) | {0x04000561}
    if charset_may_change:
        skip.add(0x00080005)
    a, b = comparable(before, skip), comparable(after, skip)
    changed = sorted({k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}, key=str)
    assert not changed, f"elements changed that were not planned: {changed[:10]}"
    for c in corrections:
        assert corrected_value(after, c.keyword) == c.after, c.keyword
    # Pixel data: the very same bytes, whether native or encapsulated.
    if "PixelData" in before:
        assert after.PixelData == before.PixelData
        assert after["PixelData"].VR == before["PixelData"].VR
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert after.get("SOPInstanceUID") == before.get("SOPInstanceUID")
    assert after.preamble == before.preamble
    for elem in before.file_meta:
        if elem.tag != 0x00020000:
            assert after.file_meta[elem.tag].value == elem.value, elem.keyword


def current(data: bytes, keyword: str) -> str:
    ds = read(data)
    return corrected_value(ds, keyword)


def last_item(out: bytes) -> Dataset:
    item: Dataset = read(out).OriginalAttributesSequence[-1]
    return item


# ---------------------------------------------------------------------------------------------
# the planned attributes change, nothing else does
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_ascii_corrections_change_only_the_planned_attributes(name: str) -> None:
    data = sample(name)
    out = apply_corrections(data, ASCII_CORRECTIONS, modified_at=WHEN)
    assert out != data
    assert_only_planned_changes(data, out, ASCII_CORRECTIONS, charset_may_change=False)
    # ASCII never needs another character set
    assert read(out).get("SpecificCharacterSet") == read(data).get("SpecificCharacterSet")


@pytest.mark.parametrize("name", SAMPLES)
def test_original_attributes_item_records_the_old_values(name: str) -> None:
    data = sample(name)
    old = read(data)
    out = apply_corrections(data, ASCII_CORRECTIONS, modified_at=WHEN)
    new = read(out)
    before_items = len(old.get("OriginalAttributesSequence", []))
    assert len(new.OriginalAttributesSequence) == before_items + 1

    item = new.OriginalAttributesSequence[-1]
    assert item.ModifyingSystem == "pacsmig"
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.AttributeModificationDateTime == WHEN_DT
    assert "SourceOfPreviousValues" in item  # type 2: present ...
    assert not item.SourceOfPreviousValues  # ... and empty
    assert len(item.ModifiedAttributesSequence) == 1
    modified = item.ModifiedAttributesSequence[0]

    changed = [c for c in ASCII_CORRECTIONS if corrected_value(old, c.keyword) != c.after]
    for c in changed:
        assert c.keyword in modified, c.keyword
        assert corrected_value(modified, c.keyword) == corrected_value(old, c.keyword), c.keyword
    expected = {c.keyword for c in changed}
    if "PatientID" in expected:
        expected.add("IssuerOfPatientID")  # PS3.3 C.12.1.1.9: context of the replaced ID
        assert corrected_value(modified, "IssuerOfPatientID") == corrected_value(
            old, "IssuerOfPatientID"
        )
    assert {e.keyword for e in modified} == expected


@pytest.mark.parametrize("name", SAMPLES)
def test_applying_twice_gives_the_same_bytes(name: str) -> None:
    data = sample(name)
    once = apply_corrections(data, ASCII_CORRECTIONS, modified_at=WHEN)
    later = WHEN + dt.timedelta(days=3)
    assert apply_corrections(once, ASCII_CORRECTIONS, modified_at=later) == once
    # and the result does not depend on anything but the inputs
    assert apply_corrections(data, ASCII_CORRECTIONS, modified_at=WHEN) == once


def test_untouched_elements_keep_their_exact_bytes() -> None:
    data = sample("CT_small.dcm")
    out = apply_corrections(data, ASCII_CORRECTIONS, modified_at=WHEN)
    before, after = read(data), read(out)
    planned = tags_of(ASCII_CORRECTIONS) | {0x04000561}
    compared = 0
    for tag in sorted(before.keys()):
        if tag in planned or (tag.element == 0 and tag.group > 6):
            continue
        raw_a, raw_b = before.get_item(tag), after.get_item(tag)
        if not isinstance(raw_a, RawDataElement):
            continue  # pydicom decodes Specific Character Set while reading
        assert isinstance(raw_b, RawDataElement)
        assert raw_a.value == raw_b.value, f"{tag} bytes changed"
        compared += 1
    assert compared > 200
    assert after.PixelData == before.PixelData


def test_deflated_stays_deflated_and_big_endian_stays_big_endian() -> None:
    dfl = apply_corrections(sample("image_dfl.dcm"), ASCII_CORRECTIONS, modified_at=WHEN)
    meta_end = 132 + 12 + read(dfl).file_meta.FileMetaInformationGroupLength
    body = dfl[meta_end:]
    # what follows the File Meta is a raw deflate stream of the little endian dataset
    assert body[:2] != b"\x08\x00"
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
    assert inflated[:2] == b"\x08\x00"
    assert b"MRN-0042" in inflated

    big = apply_corrections(sample("MR_small_bigendian.dcm"), ASCII_CORRECTIONS, modified_at=WHEN)
    ds = read(big)
    assert not ds.is_little_endian
    assert ds.Rows == read(sample("MR_small_bigendian.dcm")).Rows


# ---------------------------------------------------------------------------------------------
# values: empty, absent, multi-valued, skipped
# ---------------------------------------------------------------------------------------------


def test_empty_after_empties_the_element_and_never_deletes_it() -> None:
    data = sample("CT_small.dcm")
    fix = [Correction(keyword="PatientID", before="1CT1", after="")]
    out = apply_corrections(data, fix, modified_at=WHEN)
    ds = read(out)
    assert "PatientID" in ds
    assert ds["PatientID"].is_empty
    assert corrected_value(last_item(out).ModifiedAttributesSequence[0], "PatientID") == "1CT1"
    assert_only_planned_changes(data, out, fix, charset_may_change=False)


def test_absent_element_is_added_and_listed_empty_in_modified_attributes() -> None:
    data = sample("ExplVR_BigEnd.dcm")
    assert "PatientID" not in read(data)
    fix = [Correction(keyword="PatientID", before="", after="NEWID")]
    out = apply_corrections(data, fix, modified_at=WHEN)
    assert read(out).PatientID == "NEWID"
    modified = last_item(out).ModifiedAttributesSequence[0]
    assert "PatientID" in modified and modified["PatientID"].is_empty
    assert_only_planned_changes(data, out, fix, charset_may_change=False)


def test_absent_element_with_empty_after_changes_nothing() -> None:
    data = sample("ExplVR_BigEnd.dcm")
    fix = [Correction(keyword="PatientID", before="", after="")]
    assert apply_corrections(data, fix, modified_at=WHEN) is data


def test_corrections_already_in_place_return_the_input_unchanged() -> None:
    data = sample("CT_small.dcm")
    fix = [
        Correction(keyword="PatientID", before="x", after="1CT1"),
        Correction(keyword="PatientName", before="x", after="CompressedSamples^CT1"),
    ]
    assert apply_corrections(data, fix, modified_at=WHEN) is data
    assert apply_corrections(data, [], modified_at=WHEN) is data


def test_only_the_corrections_that_differ_are_recorded() -> None:
    data = sample("CT_small.dcm")
    fix = [
        Correction(keyword="PatientID", before="x", after="1CT1"),  # already so
        Correction(keyword="AccessionNumber", before="", after="A1"),
    ]
    out = apply_corrections(data, fix, modified_at=WHEN)
    modified = last_item(out).ModifiedAttributesSequence[0]
    assert [e.keyword for e in modified] == ["AccessionNumber"]


def test_multi_valued_attribute_round_trips() -> None:
    data = sample("CT_small.dcm")
    fix = [Correction(keyword="OtherPatientIDs", before="", after="A1\\B2\\C3")]
    out = apply_corrections(data, fix, modified_at=WHEN)
    ds = read(out)
    assert list(ds.OtherPatientIDs) == ["A1", "B2", "C3"]
    assert corrected_value(ds, "OtherPatientIDs") == "A1\\B2\\C3"
    assert_only_planned_changes(data, out, fix, charset_may_change=False)


def test_existing_original_attributes_items_are_kept() -> None:
    data = sample("rtplan.dcm")
    first = apply_corrections(
        data, [Correction(keyword="PatientID", before="", after="P1")], modified_at=WHEN
    )
    second = apply_corrections(
        first,
        [Correction(keyword="PatientID", before="", after="P2")],
        modified_at=WHEN + dt.timedelta(hours=1),
    )
    seq = read(second).OriginalAttributesSequence
    assert len(seq) == 2
    assert corrected_value(seq[0].ModifiedAttributesSequence[0], "PatientID") == "id00001"
    assert corrected_value(seq[1].ModifiedAttributesSequence[0], "PatientID") == "P1"
    assert seq[1].AttributeModificationDateTime == "20240305150709.120000+0100"
    assert comparable(seq[0], set()) == comparable(read(first).OriginalAttributesSequence[0], set())


# ---------------------------------------------------------------------------------------------
# character sets
# ---------------------------------------------------------------------------------------------

# (file, new name, Specific Character Set expected afterwards)
CHARSET_CASES = (
    ("CT_small.dcm", "MÜLLER^JÖRG", "ISO_IR 100"),  # Latin-1 can hold it
    ("CT_small.dcm", "Иванов^Иван", "ISO_IR 192"),  # it cannot
    ("MR_small_implicit.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),  # default repertoire is ASCII
    ("ExplVR_BigEnd.dcm", "Иванов^Иван", "ISO_IR 192"),
    ("image_dfl.dcm", "山田^太郎", "ISO_IR 192"),
    ("OBXXXX1A_rle.dcm", "Ørsted^Hans", "ISO_IR 100"),
    ("JPEG2000.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),
    ("chrRuss.dcm", "Иванов^Иван", "ISO_IR 144"),  # Cyrillic file, Cyrillic name
    ("chrRuss.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),
    ("chrH31.dcm", "Yamada^Hanako=山田^花子", ["", "ISO 2022 IR 87"]),  # ISO 2022, kept
    ("chrH31.dcm", "Иванов^Иван", ["", "ISO 2022 IR 87"]),  # JIS X 0208 has Cyrillic
    ("chrH31.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),  # but no Ü
    ("chrSQEncoding1.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),  # nested item inherits the old set
    ("chrX1.dcm", "MÜLLER^JÖRG", "ISO_IR 192"),
    ("chrX2.dcm", "Иванов^Иван", "GB18030"),
)


@pytest.mark.parametrize(("name", "person", "charset"), CHARSET_CASES)
def test_non_ascii_values_round_trip_and_every_other_text_decodes_the_same(
    name: str, person: str, charset: str | list[str]
) -> None:
    data = sample(name)
    fix = [
        Correction(keyword="PatientName", before="", after=person),
        Correction(keyword="StudyDescription", before="", after=person.replace("^", " ")),
        Correction(keyword="PatientID", before="", after="ID-7"),
    ]
    out = apply_corrections(data, fix, modified_at=WHEN)
    ds = read(out)
    assert ds.get("SpecificCharacterSet") == charset
    assert_only_planned_changes(data, out, fix, charset_may_change=True)

    # the old values are recorded, and decode to what the input held
    old = read(data)
    modified = last_item(out).ModifiedAttributesSequence[0]
    for c in fix:
        assert corrected_value(modified, c.keyword) == corrected_value(old, c.keyword)
    switched = charset != old.get("SpecificCharacterSet")
    if switched:
        # listed with its old value, which is also the item's own character set
        assert "SpecificCharacterSet" in modified
        assert modified.SpecificCharacterSet == old.get("SpecificCharacterSet", "")
        raw = ds.get_item("PatientName")
        assert isinstance(raw, RawDataElement)
        assert bytes(raw.value or b"").rstrip(b" ") == person.encode("utf-8")
    else:
        assert "SpecificCharacterSet" not in modified

    assert apply_corrections(out, fix, modified_at=WHEN) == out


def test_latin1_name_on_a_latin1_file_is_written_as_latin1() -> None:
    out = apply_corrections(
        sample("CT_small.dcm"),
        [Correction(keyword="PatientName", before="", after="MÜLLER^JÖRG")],
        modified_at=WHEN,
    )
    raw = read(out).get_item("PatientName")
    assert isinstance(raw, RawDataElement)
    assert bytes(raw.value or b"").rstrip(b" ") == "MÜLLER^JÖRG".encode("latin-1")


def test_nested_text_is_re_encoded_when_the_character_set_changes() -> None:
    data = sample("chrSQEncoding1.dcm")
    nested_before = read(data).RequestedProcedureCodeSequence[0].PatientName
    out = apply_corrections(
        data,
        [Correction(keyword="PatientName", before="", after="MÜLLER^JÖRG")],
        modified_at=WHEN,
    )
    ds = read(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    nested = ds.RequestedProcedureCodeSequence[0]
    raw = nested.get_item("PatientName")
    assert isinstance(raw, RawDataElement)
    assert bytes(raw.value or b"").rstrip(b" ") == str(nested_before).encode("utf-8")
    assert str(nested.PatientName) == str(nested_before) == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"


def test_a_value_the_character_set_cannot_hold_falls_back_to_utf8(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pretend the charset check was wrong: the verification of the output must notice that
    # the name did not survive ISO_IR 100 and redo the rewrite as UTF-8.
    monkeypatch.setattr(process, "_needs_utf8", lambda ds, pending: False)
    fix = [Correction(keyword="PatientName", before="", after="Иванов^Иван")]
    with pytest.warns(UserWarning):  # pydicom warns about the replacement characters
        out = apply_corrections(sample("CT_small.dcm"), fix, modified_at=WHEN)
    ds = read(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Иванов^Иван"


# ---------------------------------------------------------------------------------------------
# the output is checked before it is returned
# ---------------------------------------------------------------------------------------------


def test_a_rewrite_that_changes_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = process.dcmwrite  # type: ignore[attr-defined]

    def sloppy(fp: Any, ds: Dataset, **kwargs: Any) -> None:
        ds.StudyDate = "19990101"
        real(fp, ds, **kwargs)

    monkeypatch.setattr(process, "dcmwrite", sloppy)
    with pytest.raises(CorrectionError, match=r"StudyDate") as err:
        apply_corrections(sample("CT_small.dcm"), ASCII_CORRECTIONS, modified_at=WHEN)
    assert "19990101" not in str(err.value)


@pytest.mark.parametrize("to_utf8", [False, True])
def test_a_rewrite_that_changes_a_nested_element_is_refused(
    monkeypatch: pytest.MonkeyPatch, to_utf8: bool
) -> None:
    real = process.dcmwrite  # type: ignore[attr-defined]

    def sloppy(fp: Any, ds: Dataset, **kwargs: Any) -> None:
        ds.BeamSequence[0].BeamName = "Field 9"
        real(fp, ds, **kwargs)

    monkeypatch.setattr(process, "dcmwrite", sloppy)
    name = "Иванов^Иван" if to_utf8 else "DOE^JOHN"
    fix = [Correction(keyword="PatientName", before="", after=name)]
    with pytest.raises(CorrectionError, match=r"BeamSequence"):
        apply_corrections(sample("rtplan.dcm"), fix, modified_at=WHEN)


def test_nested_text_left_in_the_old_character_set_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without decoding everything first, pydicom re-encodes the top level for the new
    # character set but copies raw nested items as they were: same bytes, now read as UTF-8.
    monkeypatch.setattr(Dataset, "decode", lambda self: None)
    fix = [Correction(keyword="PatientName", before="", after="MÜLLER^JÖRG")]
    with (
        pytest.warns(UserWarning, match="UTF8"),  # pydicom, reading the broken output
        pytest.raises(CorrectionError, match=r"RequestedProcedureCodeSequence"),
    ):
        apply_corrections(sample("chrSQEncoding1.dcm"), fix, modified_at=WHEN)


def test_a_rewrite_that_touches_pixel_data_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = process.dcmwrite  # type: ignore[attr-defined]

    def sloppy(fp: Any, ds: Dataset, **kwargs: Any) -> None:
        ds.PixelData = bytes(ds.PixelData[:-2]) + b"\x00\x00"
        real(fp, ds, **kwargs)

    monkeypatch.setattr(process, "dcmwrite", sloppy)
    with pytest.raises(CorrectionError, match=r"PixelData"):
        apply_corrections(sample("CT_small.dcm"), ASCII_CORRECTIONS, modified_at=WHEN)


# ---------------------------------------------------------------------------------------------
# invalid corrections
# ---------------------------------------------------------------------------------------------

INVALID = (
    ("PatientID", "X" * 65),  # LO: 64 characters
    ("PatientID", "AB\\CD"),  # VM 1
    ("PatientID", " PADDED"),  # leading space is not significant
    ("PatientID", "TRAILING "),
    ("PatientID", "TAB\tID"),  # control character
    ("PatientID", "NUL\x00ID"),
    ("PatientID", "LONE\ud800X"),
    ("AccessionNumber", "A" * 17),  # SH: 16 characters
    ("StudyDescription", "two\nlines"),
    ("PatientBirthDate", "1970-01-02"),  # DA: YYYYMMDD
    ("PatientBirthDate", "19700231"),  # no such day
    ("PatientBirthDate", "197001"),
    ("PatientSex", "f"),  # CS: upper case
    ("PatientSex", "FEMALE_AND_TOO_LONG"),  # CS: 16 characters
    ("PatientName", "A=B=C=D"),  # PN: 3 component groups
    ("PatientName", "A^B^C^D^E^F"),  # PN: 5 components
    ("PatientName", "N" * 65),  # PN: 64 characters per group
    ("PatientName", "DOE^JANE="),  # trailing empty group would be lost
    ("PatientName", "Лю\x1bбов"),
)


@pytest.mark.parametrize(("keyword", "after"), INVALID)
def test_invalid_values_raise_input_error_naming_the_keyword_not_the_value(
    keyword: str, after: str
) -> None:
    fix = [Correction(keyword=keyword, before="", after=after)]
    with pytest.raises(InputError) as err:
        apply_corrections(sample("CT_small.dcm"), fix, modified_at=WHEN)
    message = str(err.value)
    assert isinstance(err.value, CorrectionError)
    assert keyword in message
    assert "\n" not in message
    assert len(after) < 3 or after not in message
    for token in re.findall(r"\w{3,}", after):
        assert token not in message, "the message leaks the value"
    with pytest.raises(CorrectionError):
        validate_corrections(fix)


@pytest.mark.parametrize(
    ("keyword", "after", "needle"),
    [
        ("NotAKeyword", "x", "not a DICOM keyword"),
        ("SOPInstanceUID", "1.2.3", "cannot be corrected"),
        ("SpecificCharacterSet", "ISO_IR 100", "cannot be corrected"),
        ("OriginalAttributesSequence", "", "cannot be corrected"),
        ("TransferSyntaxUID", "1.2.840.10008.1.2", "cannot be corrected"),
        ("Rows", "512", "VR US"),
        ("PixelData", "", "cannot be corrected"),
    ],
)
def test_attributes_that_cannot_be_corrected(keyword: str, after: str, needle: str) -> None:
    with pytest.raises(CorrectionError, match=needle):
        validate_corrections([Correction(keyword=keyword, before="", after=after)])


def test_conflicting_corrections_for_one_attribute_are_refused() -> None:
    fix = [
        Correction(keyword="PatientID", before="", after="A"),
        Correction(keyword="PatientID", before="", after="B"),
    ]
    with pytest.raises(CorrectionError, match="PatientID"):
        validate_corrections(fix)
    same = [fix[0], fix[0]]
    out = apply_corrections(sample("CT_small.dcm"), same, modified_at=WHEN)
    assert read(out).PatientID == "A"


@pytest.mark.parametrize(
    ("keyword", "after"),
    [
        ("PatientSex", "O"),
        ("PatientBirthDate", "20000229"),
        ("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("PatientName", "DOE^JOHN^^^"),
        ("PatientAge", "042Y"),
        ("PatientWeight", "72.5"),
        ("SeriesNumber", "-7"),
        ("StudyTime", "140709.123"),
        ("AcquisitionDateTime", "20240305140709.5+0100"),
        ("StudyComments", "line one\r\nline two \\ not a delimiter"),
        ("ReferringPhysicianName", ""),
    ],
)
def test_valid_values_of_other_vrs_round_trip(keyword: str, after: str) -> None:
    data = sample("CT_small.dcm")
    fix = [Correction(keyword=keyword, before="", after=after)]
    out = apply_corrections(data, fix, modified_at=WHEN)
    assert corrected_value(read(out), keyword) == after
    assert_only_planned_changes(data, out, fix, charset_may_change=True)


def test_undecodable_input_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot be decoded"):
        apply_corrections(b"not dicom at all", ASCII_CORRECTIONS, modified_at=WHEN)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (dt.datetime(2024, 3, 5, 14, 7, 9), "20240305140709"),
        (dt.datetime(2024, 3, 5, 14, 7, 9, 5), "20240305140709.000005"),
        (dt.datetime(2024, 3, 5, 14, 7, 9, tzinfo=dt.UTC), "20240305140709+0000"),
        (
            dt.datetime(
                2024, 3, 5, 1, 2, 3, tzinfo=dt.timezone(-dt.timedelta(hours=3, minutes=30))
            ),
            "20240305010203-0330",
        ),
        (dt.datetime(999, 1, 2, 3, 4, 5), "09990102030405"),
    ],
)
def test_dicom_datetime(moment: dt.datetime, text: str) -> None:
    assert dicom_datetime(moment) == text


def test_corrected_value_forms() -> None:
    ds = Dataset()
    assert corrected_value(ds, "PatientName") == ""
    ds.PatientName = "DOE^JOHN"
    ds.OtherPatientIDs = ["A", "B"]
    ds.PatientWeight = "72.50"
    ds.PatientID = ""
    assert corrected_value(ds, "PatientName") == "DOE^JOHN"
    assert corrected_value(ds, "OtherPatientIDs") == "A\\B"
    assert corrected_value(ds, "PatientWeight") == "72.50"
    assert corrected_value(ds, "PatientID") == ""
    with pytest.raises(CorrectionError):
        corrected_value(ds, "NoSuchKeyword")


def test_tag_constants_match_the_dictionary() -> None:
    for tag, keyword in [
        (process._CHARSET, "SpecificCharacterSet"),
        (process._ORIGINAL_ATTRIBUTES, "OriginalAttributesSequence"),
        (process._PATIENT_ID, "PatientID"),
        (process._ISSUER_OF_PATIENT_ID, "IssuerOfPatientID"),
    ]:
        assert pydicom.datadict.keyword_for_tag(BaseTag(tag)) == keyword
