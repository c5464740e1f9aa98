"""Rewrite the planned corrections into one Part 10 instance, and nothing else.

``apply_corrections`` decodes an instance with pydicom, sets each planned attribute to its
``after`` value, records what it replaced in an Original Attributes Sequence item, and encodes
the result again in the transfer syntax it arrived in. Pixel data is never decoded: the element
value goes out as the bytes that came in, encapsulated or native, little or big endian; the
deflated transfer syntax is deflated again. Elements that were not corrected are written back
from their raw bytes, so they are byte-identical unless the character set has to change.

Original Attributes Sequence (PS3.3 C.12.1.1.9, SOP Common module, Table C.12-1)
    One item is appended per rewrite; items already present are kept as they are. The item
    holds Attribute Modification DateTime (0400,0562, type 1) = ``modified_at`` as DT,
    Modifying System (0400,0563, type 1) = "pacsmig", Source of Previous Values (0400,0564,
    type 2, so present and empty: this function does not know where the instance came
    from), Reason for the Attribute Modification (0400,0565, type 1) = "COERCE" (the defined
    term for replacing Patient Name, ID, Accession Number ... "during import ... or
    reconciliation against a master patient index"; "CORRECT" is for operator error), and
    Modified Attributes Sequence (0400,0550, type 1, exactly one item) with the previous value
    of every attribute that was replaced, added or emptied:

    * a replaced attribute is listed with the value it had, as it had it;
    * an attribute that was absent and is now added is listed with a zero-length value. The
      current text says the sequence contains "all Attributes that were added, removed or
      replaced"; an empty value is the only "previous value" an absent attribute has. (This
      makes "absent before" and "empty before" look the same; both mean "no value".)
    * when Patient ID is corrected, Issuer of Patient ID (0010,0021) is listed too, with
      its unchanged value, or empty when absent, as C.12.1.1.9 recommends ("even if
      unchanged, or absent in the original");
    * when the character set had to change (below), the original Specific Character Set is
      listed as well. Inside the Modified Attributes Sequence item that element also acts as
      the item's own character set (PS3.5 7.5.3), so the old values are encoded there in the
      character set they were written in. That is the reason for listing it.

    Instance Coercion DateTime (0008,0015), which the standard allows but does not require,
    is not set: apart from the Original Attributes Sequence and, when it has to change,
    Specific Character Set, only the planned attributes change.

Character sets (PS3.5 6.1)
    An ``after`` value is kept in the instance's own Specific Character Set when every
    character can be encoded in it exactly, the way pydicom will write it. Otherwise the
    instance is re-encoded as UTF-8: Specific Character Set becomes "ISO_IR 192" and every
    other text element, top level and nested, is decoded in the old character set first and
    written again in UTF-8, so it still decodes to the same text. Sequence items that carry
    their own Specific Character Set keep it. The default repertoire (no Specific Character
    Set, or ISO_IR 6 first) is treated as ASCII. pydicom would accept Latin-1 characters there,
    and would write them without the escape sequence ISO 2022 requires. When the character
    set changes, every element goes through pydicom's decoder and encoder, so bytes may
    change but values do not. For example, an explicit "UN" element of a known attribute is
    written with its dictionary VR.

Encoding
    The File Meta is written as received; only its group length is recomputed. pydicom fills
    in required File Meta elements only when one is missing. Retired group lengths (gggg,0000)
    in the dataset are dropped: pydicom never writes them, and once a value changes length they
    would be wrong (PS3.5 7.2).

Values (PS3.5 6.2)
    ``after`` must be valid for the attribute's VR: length in characters (LO 64, SH 16, CS 16,
    PN 64 per component group, ...), character repertoire (no control characters except CR, LF
    and FF in ST, LT and UT; CS upper case), format (DA a real calendar date YYYYMMDD; TM, DT,
    AS, DS, IS and UI their patterns), PN at most 3 component groups of at most 5 components.
    A backslash separates values only where the attribute's VM allows several. Leading or
    trailing spaces are refused where the standard makes them insignificant, because they
    would not survive the round trip. Only text VRs can be corrected. Identifying UIDs,
    Specific Character Set and the Original Attributes Sequence cannot be.

Safety
    After encoding, the output is decoded again and compared with the input. Each corrected
    attribute must read back as ``after``. Every other element, including nested ones, the
    existing Original Attributes Sequence items, the SOP Instance UID and the transfer syntax
    must read back as before. If a value does not read back in the original character set, the
    rewrite is tried once more as UTF-8. Any other difference raises ``CorrectionError``.

Idempotence
    A correction whose current value already equals ``after`` is skipped. When nothing is left
    to change, the input bytes are returned unchanged, so applying the same corrections again
    to the output gives the output byte for byte.

The ``before`` field of a correction is informational: the instance is rewritten whatever it
holds, and the Modified Attributes Sequence records the value the instance actually had.
Error messages name keywords and rules, never values: the values are patient data.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.charset import (
    _encode_string_impl,
    _encode_string_parts,
    convert_encodings,
    default_encoding,
)
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from pacsmig.errors import InputError
from pacsmig.plan.model import Correction

__all__ = [
    "MODIFYING_SYSTEM",
    "REASON",
    "UTF8_CHARSET",
    "CorrectionError",
    "apply_corrections",
    "corrected_value",
    "dicom_datetime",
    "validate_corrections",
]

MODIFYING_SYSTEM = "pacsmig"
REASON = "COERCE"
UTF8_CHARSET = "ISO_IR 192"

_CHARSET = BaseTag(0x00080005)
_ISSUER_OF_PATIENT_ID = BaseTag(0x00100021)
_PATIENT_ID = BaseTag(0x00100020)
_ORIGINAL_ATTRIBUTES = BaseTag(0x04000561)
_META_GROUP_LENGTH = BaseTag(0x00020000)
_REQUIRED_META = (BaseTag(0x00020002), BaseTag(0x00020003), BaseTag(0x00020010))

# Attributes that identify the instance or that this module manages itself.
_NOT_CORRECTABLE = frozenset(
    {
        "SpecificCharacterSet",
        "OriginalAttributesSequence",
        "SOPInstanceUID",
        "SOPClassUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    }
)

# PS3.5 Table 6.2-1: maximum length in characters per value (PN: per component group).
_MAX_CHARS = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "PN": 64,
    "SH": 16,
    "ST": 1024,
    "TM": 14,
    "UC": 0xFFFFFFFE,
    "UI": 64,
    "UR": 0xFFFFFFFE,
    "UT": 0xFFFFFFFE,
}
_SINGLE_TEXT = frozenset({"LT", "ST", "UT"})  # backslash is text here, never a delimiter
# VRs whose encoding depends on Specific Character Set (PS3.5 6.1.2.3)
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_PATTERNS = {
    "AE": re.compile(r"[\x20-\x5b\x5d-\x7e]+"),
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]+"),
    "DA": re.compile(r"\d{8}"),
    "DS": re.compile(r"[+-]?(?:\d+|\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?"),
    "DT": re.compile(
        r"\d{4}(?:(?:0[1-9]|1[0-2])(?:(?:0[1-9]|[12]\d|3[01])(?:(?:[01]\d|2[0-3])"
        r"(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?)?)?)?(?:[+-](?:0\d|1[0-4])[0-5]\d)?"
    ),
    "IS": re.compile(r"[+-]?\d+"),
    "TM": re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?"),
    "UI": re.compile(r"(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*))*"),
    "UR": re.compile(r"[A-Za-z0-9_:/?#\[\]@!$&'()*+,;=%\-.~]+"),
}
_TEXT_CONTROLS = frozenset("\r\n\f")  # allowed in ST, LT, UT besides graphic characters
_VM = re.compile(r"(\d+)(?:-(\d*)(n?))?")


class CorrectionError(InputError):
    """A planned correction cannot be applied to an instance (the message names no values)."""


@dataclass(frozen=True, slots=True)
class _Planned:
    keyword: str
    tag: BaseTag
    vr: str
    after: str
    values: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def apply_corrections(
    data: bytes, corrections: Sequence[Correction], *, modified_at: dt.datetime
) -> bytes:
    """Return ``data`` (Part 10 bytes) with every correction applied; see the module doc.

    Raises ``CorrectionError`` (an ``InputError``) when a correction is invalid for its
    attribute's VR, when ``data`` cannot be decoded, or when the rewrite would change
    anything it should not.
    """
    planned = _validate(corrections)
    if not planned:
        return data
    try:
        return _apply(data, planned, dicom_datetime(modified_at))
    except CorrectionError:
        raise
    except Exception as exc:  # pydicom on malformed data: name the kind, never the content
        raise CorrectionError(f"instance cannot be corrected ({type(exc).__name__})") from None


def _apply(data: bytes, planned: Sequence[_Planned], stamp: str) -> bytes:
    ds = _read(data)
    pending = [p for p in planned if corrected_value(ds, p.keyword) != p.after]
    if not pending:
        return data
    to_utf8 = _needs_utf8(ds, pending)
    out = _rewrite(data, pending, stamp, to_utf8=to_utf8)
    problem = _verify(data, out, pending, to_utf8=to_utf8)
    if problem is not None and problem[0] and not to_utf8:
        # A value did not survive the original character set after all: use UTF-8.
        out = _rewrite(data, pending, stamp, to_utf8=True)
        problem = _verify(data, out, pending, to_utf8=True)
    if problem is not None:
        raise CorrectionError(f"correcting the instance would {problem[1]}; refused")
    return out


def validate_corrections(corrections: Sequence[Correction]) -> None:
    """Check every correction against its attribute's VR without touching an instance.

    Lets apply refuse a study before retrieving anything. Raises ``CorrectionError``.
    """
    _validate(corrections)


def corrected_value(ds: Dataset, keyword: str) -> str:
    """The current value of ``keyword`` in ``ds`` as text, "" when absent or empty.

    PN values are given as their string form, multiple values joined with a backslash,
    numbers as written (DS and IS keep their original string).
    """
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise CorrectionError(f"correction {keyword[:64]!r}: not a DICOM keyword")
    if tag not in ds:
        return ""
    return _as_text(ds[tag].value)


def dicom_datetime(moment: dt.datetime) -> str:
    """``moment`` as a DICOM DT value: YYYYMMDDHHMMSS[.FFFFFF][&ZZXX] (PS3.5 Table 6.2-1).

    Fractional seconds are written only when non-zero; the UTC offset only for an aware
    datetime.
    """
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    offset = moment.utcoffset()
    if offset is not None:
        minutes = round(offset.total_seconds() / 60)
        sign = "-" if minutes < 0 else "+"
        minutes = abs(minutes)
        text += f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return text


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _validate(corrections: Iterable[Correction]) -> list[_Planned]:
    planned: dict[BaseTag, _Planned] = {}
    for c in corrections:
        p = _plan_one(c)
        seen = planned.get(p.tag)
        if seen is not None and seen.after != p.after:
            raise CorrectionError(f"correction {p.keyword}: planned twice with different values")
        planned.setdefault(p.tag, p)
    return list(planned.values())


def _plan_one(c: Correction) -> _Planned:
    keyword = c.keyword
    tag_int = tag_for_keyword(keyword) if isinstance(keyword, str) else None
    if tag_int is None:
        raise CorrectionError(f"correction {str(keyword)[:64]!r}: not a DICOM keyword")
    tag = Tag(tag_int)
    if keyword in _NOT_CORRECTABLE or tag.group in (0x0000, 0x0002, 0xFFFE) or tag.is_private:
        raise CorrectionError(f"correction {keyword}: this attribute cannot be corrected")
    vr = dictionary_VR(tag)
    if vr not in _MAX_CHARS:
        raise CorrectionError(f"correction {keyword}: VR {vr} cannot be corrected")
    if not isinstance(c.after, str):
        raise CorrectionError(f"correction {keyword}: value must be text")
    after = c.after
    if vr in _SINGLE_TEXT:
        values: tuple[str, ...] = (after,) if after else ()
    else:
        values = tuple(after.split("\\")) if after else ()
        if len(values) > 1 and not _vm_allows(dictionary_VM(tag), len(values)):
            raise CorrectionError(
                f"correction {keyword}: value has {len(values)} backslash-separated values, "
                f"VM is {dictionary_VM(tag)}"
            )
    for value in values:
        reason = _invalid(vr, value)
        if reason:
            raise CorrectionError(f"correction {keyword}: value is not a valid {vr}: {reason}")
    return _Planned(keyword=keyword, tag=tag, vr=vr, after=after, values=values)


def _vm_allows(vm: str, count: int) -> bool:
    m = _VM.fullmatch(vm.strip())
    if m is None:
        return True
    low = int(m.group(1))
    if m.group(2) is None:
        return count == low
    if m.group(3):
        step = int(m.group(2)) if m.group(2) else 1
        return count >= low and count % step == 0
    return low <= count <= int(m.group(2))


def _invalid(vr: str, value: str) -> str:
    """Why ``value`` (one value, not empty-checked) is not a valid ``vr``, or ""."""
    if not value:
        return ""
    for ch in value:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "contains a lone surrogate"
        if cat == "Cc" and not (vr in _SINGLE_TEXT and ch in _TEXT_CONTROLS):
            return "contains a control character"
    if vr in _SINGLE_TEXT or vr == "UC":
        if value != value.rstrip(" "):
            return "trailing spaces are not significant and would be lost"
    elif value != value.strip(" "):
        return "leading or trailing spaces are not significant and would be lost"
    if vr == "PN":
        return _invalid_pn(value)
    if len(value) > _MAX_CHARS[vr]:
        return f"longer than {_MAX_CHARS[vr]} characters"
    pattern = _PATTERNS.get(vr)
    if pattern is not None and not pattern.fullmatch(value):
        return "does not match the VR's format"
    if vr == "DA":
        try:
            dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return "not a calendar date YYYYMMDD"
    if vr == "IS" and not -(2**31) <= int(value) <= 2**31 - 1:
        return "outside the range of a signed 32-bit integer"
    if vr == "DS" and not math.isfinite(float(value)):
        return "not a finite number"
    return ""


def _invalid_pn(value: str) -> str:
    groups = value.split("=")
    if len(groups) > 3:
        return "more than 3 component groups"
    if not groups[-1]:
        return "ends with an empty component group, which would be lost"
    for group in groups:
        if len(group) > _MAX_CHARS["PN"]:
            return f"a component group is longer than {_MAX_CHARS['PN']} characters"
        if group.count("^") > 4:
            return "a component group has more than 5 components"
    return ""


# --------------------------------------------------------------------------------------------
# character sets
# --------------------------------------------------------------------------------------------


def _charset_terms(ds: Dataset) -> list[str]:
    elem = ds.get(_CHARSET)
    if elem is None or elem.value is None:
        return []
    raw = elem.value
    terms = [raw] if isinstance(raw, str) else [str(t) for t in raw]
    return [t.strip() for t in terms]


def _needs_utf8(ds: Dataset, pending: Sequence[_Planned]) -> bool:
    terms = _charset_terms(ds)
    if terms == [UTF8_CHARSET]:
        return False
    units = [u for p in pending if p.vr in _CHARSET_VRS for u in _units(p)]
    units = [u for u in units if not u.isascii()]
    if not units:
        return False
    try:
        encodings = convert_encodings(terms or None)
    except (LookupError, ValueError):
        return True
    return not all(_fits(u, encodings) for u in units)


def _units(p: _Planned) -> list[str]:
    # pydicom encodes PN per component (split at ^ and =) and text per value.
    if p.vr == "PN":
        return [u for v in p.values for u in re.split(r"[=^]", v)]
    return list(p.values)


def _fits(text: str, encodings: list[str]) -> bool:
    """Whether pydicom writes ``text`` exactly and conformantly in ``encodings``."""
    if encodings[0] == default_encoding and any(0x80 <= ord(ch) <= 0xFF for ch in text):
        # The default repertoire is ASCII; pydicom's "iso8859" there would write Latin-1
        # bytes without the escape sequence that designates them.
        return False
    for encoding in encodings:
        try:
            _encode_string_impl(text, encoding)
            return True
        except (UnicodeError, LookupError):
            continue
    if len(encodings) > 1:
        try:
            _encode_string_parts(text, encodings)
            return True
        except (UnicodeError, ValueError, LookupError):
            return False
    return False


# --------------------------------------------------------------------------------------------
# rewriting
# --------------------------------------------------------------------------------------------


def _read(data: bytes) -> FileDataset:
    try:
        return dcmread(BytesIO(data))
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise CorrectionError(
            f"instance cannot be decoded as DICOM Part 10 ({type(exc).__name__})"
        ) from None


def _rewrite(data: bytes, pending: Sequence[_Planned], stamp: str, *, to_utf8: bool) -> bytes:
    ds = _read(data)
    try:
        return _encode(ds, pending, stamp, to_utf8=to_utf8)
    except CorrectionError:
        raise
    except Exception as exc:
        raise CorrectionError(
            f"instance cannot be re-encoded with the corrections ({type(exc).__name__})"
        ) from None


def _encode(ds: FileDataset, pending: Sequence[_Planned], stamp: str, *, to_utf8: bool) -> bytes:
    if to_utf8:
        # Decode every text element, nested ones too, in the character set it was written
        # in, before the character set changes; pydicom then encodes them all as UTF-8.
        ds.decode()

    previous = Dataset()
    for p in pending:
        previous[p.tag] = _previous(ds, p.tag, p.vr)
    if any(p.tag == _PATIENT_ID for p in pending) and _ISSUER_OF_PATIENT_ID not in previous:
        previous[_ISSUER_OF_PATIENT_ID] = _previous(ds, _ISSUER_OF_PATIENT_ID, "LO")
    if to_utf8:
        previous[_CHARSET] = _previous(ds, _CHARSET, "CS")

    item = Dataset()
    item.SourceOfPreviousValues = ""
    item.ModifiedAttributesSequence = DicomSequence([previous])
    item.AttributeModificationDateTime = stamp
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.ReasonForTheAttributeModification = REASON

    if to_utf8:
        ds[_CHARSET] = DataElement(_CHARSET, "CS", UTF8_CHARSET)
    for p in pending:
        ds[p.tag] = DataElement(p.tag, p.vr, _element_value(p))

    existing = ds.get(_ORIGINAL_ATTRIBUTES)
    if existing is None:
        ds[_ORIGINAL_ATTRIBUTES] = DataElement(_ORIGINAL_ATTRIBUTES, "SQ", DicomSequence([item]))
    elif existing.VR == "SQ" and isinstance(existing.value, DicomSequence):
        existing.value.append(item)
    else:
        raise CorrectionError("instance has an Original Attributes Sequence that is not a sequence")

    # The File Meta goes out as received (pydicom recomputes its group length). Only when a
    # required element is missing does pydicom's File Format enforcement fill it in; it would
    # otherwise also overwrite Media Storage SOP Class/Instance UIDs that disagree with the
    # dataset, which is not this module's business.
    meta = ds.file_meta
    complete = bool(ds.preamble) and all(meta.get(t) for t in _REQUIRED_META)
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=not complete)
    return buffer.getvalue()


def _previous(ds: Dataset, tag: BaseTag, vr: str) -> DataElement:
    if tag in ds:
        return copy.deepcopy(ds[tag])
    return DataElement(tag, vr, None)


def _element_value(p: _Planned) -> Any:
    if not p.values:
        return None
    if len(p.values) == 1:
        return p.values[0]
    return list(p.values)


# --------------------------------------------------------------------------------------------
# verification of the output against the input
# --------------------------------------------------------------------------------------------


def _verify(
    data: bytes, out: bytes, pending: Sequence[_Planned], *, to_utf8: bool
) -> tuple[bool, str] | None:
    """(is a round-trip failure of a corrected value, what) or None when all is well."""
    before = _read(data)
    try:
        after = dcmread(BytesIO(out))
    except Exception as exc:
        return False, f"produce undecodable output ({type(exc).__name__})"
    for p in pending:
        if corrected_value(after, p.keyword) != p.after:
            return True, f"not store {p.keyword} exactly in the instance's character set"
    if _ts(before) != _ts(after):
        return False, "change the transfer syntax"
    for elem in before.file_meta:
        if elem.tag == _META_GROUP_LENGTH:
            continue
        if elem.tag not in after.file_meta or not _same_value(elem, after.file_meta[elem.tag]):
            return False, f"change File Meta {_name(elem.tag)}"
    skip = {p.tag for p in pending} | {_ORIGINAL_ATTRIBUTES}
    if to_utf8:
        skip.add(_CHARSET)
    where = _first_difference(before, after, skip)
    if where is not None:
        return False, f"also change {where}"
    old = _items(before)
    new = _items(after)
    if len(new) != len(old) + 1 or any(
        not _same_dataset(a, b) for a, b in zip(old, new[: len(old)], strict=True)
    ):
        return False, "change the existing Original Attributes Sequence items"
    return None


def _ts(ds: FileDataset) -> str:
    return str(ds.file_meta.get("TransferSyntaxUID", ""))


def _items(ds: Dataset) -> list[Dataset]:
    elem = ds.get(_ORIGINAL_ATTRIBUTES)
    if elem is None or elem.value is None:
        return []
    return list(elem.value)


def _first_difference(a: Dataset, b: Dataset, skip: set[BaseTag]) -> str | None:
    tags = (set(a.keys()) | set(b.keys())) - skip
    for tag in sorted(tags):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group length: pydicom never writes one (PS3.5 7.2)
        if not _same_element(a, b, tag):
            return _name(tag)
    return None


def _same_dataset(a: Dataset, b: Dataset) -> bool:
    return _first_difference(a, b, set()) is None


def _same_element(a: Dataset, b: Dataset, tag: BaseTag) -> bool:
    if tag not in a or tag not in b:
        return False
    raw_a, raw_b = a.get_item(tag), b.get_item(tag)
    if (
        isinstance(raw_a, RawDataElement)
        and isinstance(raw_b, RawDataElement)
        and raw_a.VR == raw_b.VR
        and raw_a.value == raw_b.value
        and a.original_character_set == b.original_character_set
    ):
        return True  # the same bytes in the same encoding
    return _same_value(a[tag], b[tag])


def _same_value(x: DataElement, y: DataElement) -> bool:
    if x.VR != y.VR:
        return False
    if x.VR == "SQ":
        xs, ys = list(x.value or []), list(y.value or [])
        return len(xs) == len(ys) and all(_same_dataset(i, j) for i, j in zip(xs, ys, strict=True))
    return bool(_norm(x.value) == _norm(y.value))


def _norm(value: Any) -> Any:
    if value is None or (isinstance(value, str | bytes) and not value):
        return None
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, MultiValue | list | tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, bytes | int):
        return value
    return str(value)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_as_text(v) for v in value)
    return str(value)


def _name(tag: BaseTag) -> str:
    keyword = keyword_for_tag(tag) if not tag.is_private else ""
    return f"{tag} {keyword}".strip()
