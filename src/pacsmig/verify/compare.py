"""One instance's destination copy against its source copy, element by element.

Everything is compared except what is per file or per encoding and what the plan changes on
purpose: File Meta (group 0002), group lengths (gggg,0000), Data Set Trailing Padding
(FFFC,FFFC); the planned corrections, which must read back as their corrected value instead;
with corrections, the Original Attributes Sequence pacsmig adds and a Specific Character Set
that had to become UTF-8 (values are compared decoded, so a re-encoding is not a change); for
a study planned lossy, the Lossy Image Compression attributes and Photometric Interpretation.

Sequences are compared item by item, recursively. Pixel data is compared decoded: equal
arrays are equal pixels whatever the transfer syntax (a lossless transcode passes), and then
Photometric Interpretation, Planar Configuration and the Derivation Description (and
Code Sequence) a codec writes may differ with the encoding. A lossy
planned transcode, or a lossy-compressed source decoded by another codec, is judged against a
tolerance (max absolute error, PSNR) and noted, not failed.

Values in differences are summaries: text cut at 64 characters; binary as its length and a
sha256 prefix. They hold patient data: they go to the journal and the report, never to logs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, JPEGLSNearLossless
from pydicom.valuerep import PersonName

from pacsmig.plan.model import Correction, StudyAction

PIXEL_TAGS = frozenset({BaseTag(0x7FE00010), BaseTag(0x7FE00008), BaseTag(0x7FE00009)})
TRAILING_PADDING = BaseTag(0xFFFCFFFC)
SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
ORIGINAL_ATTRIBUTES = BaseTag(0x04000561)
PHOTOMETRIC = BaseTag(0x00280004)
PLANAR_CONFIGURATION = BaseTag(0x00280006)
LOSSY_ATTRIBUTES = frozenset(
    {BaseTag(0x00282110), BaseTag(0x00282112), BaseTag(0x00282114)}  # Lossy Image Compression
)
# Differ legitimately when the pixels were re-encoded and decode to the same array: DCMTK's
# codecs (inside Orthanc) also describe the compression in Derivation Description and the
# Derivation Code Sequence, lossless or not.
DERIVATION_DESCRIPTION = BaseTag(0x00082111)
DERIVATION_CODES = BaseTag(0x00089215)
ENCODING_ATTRIBUTES = frozenset(
    {PHOTOMETRIC, PLANAR_CONFIGURATION, DERIVATION_DESCRIPTION, DERIVATION_CODES}
)

LOSSY_MIN_PSNR = 30.0  # dB: a planned lossy transcode below this is a damaged image
DECODER_MIN_PSNR = 40.0  # dB: two codecs decoding the same lossy stream differ by rounding
SUMMARY_CHARS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ElementDiff:
    tag: str  # "(gggg,eeee)", or a path into sequences: "(0008,1140)[0].(0008,1155)"
    keyword: str
    expected: str  # the source's copy (or the corrected value), summarised
    found: str  # the destination's copy, summarised


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageComparison:
    sop_uid: str
    equal: bool
    differences: tuple[ElementDiff, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LossyPlan:
    """A planned lossy transcode: its syntax and, for JPEG-LS near-lossless, NEAR."""

    syntax: str
    quality: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareRules:
    corrections: tuple[Correction, ...] = ()
    lossy: LossyPlan | None = None
    skip: frozenset[BaseTag] = field(default_factory=frozenset)


def rules_for(action: StudyAction) -> CompareRules:
    """What the plan changes on purpose in this study's instances."""
    skip: set[BaseTag] = set()
    corrections = tuple(action.corrections)
    for c in corrections:
        skip.add(BaseTag(Tag(c.keyword)))
    if corrections:
        skip |= {SPECIFIC_CHARACTER_SET, ORIGINAL_ATTRIBUTES}
    lossy = parse_lossy(action.transcode)
    if lossy is not None:
        skip |= LOSSY_ATTRIBUTES | {PHOTOMETRIC}
    return CompareRules(corrections=corrections, lossy=lossy, skip=frozenset(skip))


def parse_lossy(transcode: str) -> LossyPlan | None:
    """ "lossy:<uid>;quality=N" -> LossyPlan; anything else (lossless, as stored) -> None."""
    if not transcode.startswith("lossy:"):
        return None
    syntax, _, params = transcode.removeprefix("lossy:").partition(";")
    quality: int | None = None
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "quality" and value.strip().isdigit():
            quality = int(value)
    return LossyPlan(syntax=syntax.strip(), quality=quality)


# -- summaries ----------------------------------------------------------------------------


def tag_text(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def summarise(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, bytes | bytearray):
        digest = hashlib.sha256(bytes(value)).hexdigest()[:16]
        return f"{len(value)} bytes sha256:{digest}"
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"{'x'.join(map(str, value.shape))} {value.dtype} sha256:{digest}"
    text = str(_norm(value))
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _norm(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, PersonName):
        return str(value).rstrip("^= ")
    if isinstance(value, str):
        return value.rstrip(" \x00")
    return value


def _values_equal(a: DataElement, b: DataElement) -> bool:
    va, vb = a.value, b.value
    if isinstance(va, bytes) != isinstance(vb, bytes) and "UN" in (a.VR, b.VR):
        # One side kept an element as UN (implicit VR, unknown private tag): same bytes?
        return _raw(a) == _raw(b)
    return bool(_norm(va) == _norm(vb))


def _raw(elem: DataElement) -> bytes:
    if isinstance(elem.value, bytes):
        return elem.value.rstrip(b"\x00 ")
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_data_element(buf, elem)
    # Implicit VR little endian: 4 bytes tag, 4 bytes length, then the value.
    return bytes(buf.getvalue()[8:]).rstrip(b"\x00 ")


# -- datasets -------------------------------------------------------------------------------


def _skip_always(tag: BaseTag) -> bool:
    return tag.group == 0x0002 or tag.element == 0x0000 or tag == TRAILING_PADDING


def _keyword(elem: DataElement | None, tag: BaseTag) -> str:
    return (elem.keyword if elem is not None else "") or tag_text(tag)


def diff_datasets(
    expected: Dataset,
    found: Dataset,
    *,
    skip: Iterable[BaseTag] = (),
    prefix_tag: str = "",
    prefix_keyword: str = "",
) -> list[ElementDiff]:
    """Element differences (pixel data excluded), recursing into sequence items."""
    skipped = set(skip)
    out: list[ElementDiff] = []
    for tag in sorted(set(expected.keys()) | set(found.keys())):
        tag = BaseTag(tag)
        if _skip_always(tag) or tag in skipped or (not prefix_tag and tag in PIXEL_TAGS):
            continue
        ea, eb = expected.get(tag), found.get(tag)
        path_tag = f"{prefix_tag}{tag_text(tag)}"
        path_kw = f"{prefix_keyword}{_keyword(ea if ea is not None else eb, tag)}"
        if ea is None or eb is None:
            out.append(
                ElementDiff(
                    tag=path_tag,
                    keyword=path_kw,
                    expected=summarise(ea.value if ea is not None else None),
                    found=summarise(eb.value if eb is not None else None),
                )
            )
            continue
        if ea.VR == "SQ" or eb.VR == "SQ":
            out.extend(_diff_sequence(ea, eb, path_tag, path_kw))
        elif not _values_equal(ea, eb):
            out.append(
                ElementDiff(
                    tag=path_tag,
                    keyword=path_kw,
                    expected=summarise(ea.value),
                    found=summarise(eb.value),
                )
            )
    return out


def _diff_sequence(
    a: DataElement, b: DataElement, path_tag: str, path_kw: str
) -> list[ElementDiff]:
    items_a = list(a.value or []) if a.VR == "SQ" else None
    items_b = list(b.value or []) if b.VR == "SQ" else None
    if items_a is None or items_b is None or len(items_a) != len(items_b):
        return [
            ElementDiff(
                tag=path_tag,
                keyword=path_kw,
                expected=f"{len(items_a)} items" if items_a is not None else summarise(a.value),
                found=f"{len(items_b)} items" if items_b is not None else summarise(b.value),
            )
        ]
    out: list[ElementDiff] = []
    for n, (ia, ib) in enumerate(zip(items_a, items_b, strict=True)):
        out.extend(
            diff_datasets(ia, ib, prefix_tag=f"{path_tag}[{n}].", prefix_keyword=f"{path_kw}[{n}].")
        )
    return out


def _corrections(found: Dataset, corrections: tuple[Correction, ...]) -> list[ElementDiff]:
    """Each corrected attribute must hold its planned value at the destination."""
    out = []
    for c in corrections:
        tag = BaseTag(Tag(c.keyword))
        elem = found.get(tag)
        value = _norm(elem.value) if elem is not None and elem.value is not None else ""
        got = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
        after = c.after.rstrip(" ")
        if elem is not None and elem.VR == "PN":
            got, after = got.rstrip("^= "), after.rstrip("^= ")
        if after != got:
            out.append(
                ElementDiff(
                    tag=tag_text(tag),
                    keyword=c.keyword,
                    expected=summarise(c.after),
                    found=summarise(got if elem is not None else None),
                )
            )
    return out


# -- pixels ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _PixelVerdict:
    equal: bool
    diff: ElementDiff | None = None
    note: str = ""
    reencoded: bool = False  # decoded equal (or within tolerance) from different bytes


def _syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(value)) if value else None


LOSSY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy allowed)
        "1.2.840.10008.1.2.4.203",  # HTJ2K (lossy allowed)
    }
)


def _is_lossy_syntax(uid: UID | None) -> bool:
    return uid is not None and str(uid) in LOSSY_SYNTAXES


def _decode(ds: Dataset) -> np.ndarray[Any, Any]:
    return np.asarray(ds.pixel_array)


def _psnr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], bits: int) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    peak = float(2**bits - 1)
    return 10.0 * math.log10(peak * peak / mse)


def compare_pixels(expected: Dataset, found: Dataset, rules: CompareRules) -> _PixelVerdict:
    tags = [t for t in PIXEL_TAGS if t in expected or t in found]
    if not tags:
        return _PixelVerdict(equal=True)
    tag = sorted(tags)[0]
    keyword = _keyword(expected.get(tag) or found.get(tag), tag)
    ea, eb = expected.get(tag), found.get(tag)
    if ea is None or eb is None:
        return _PixelVerdict(
            equal=False,
            diff=ElementDiff(
                tag=tag_text(tag),
                keyword=keyword,
                expected=summarise(ea.value if ea is not None else None),
                found=summarise(eb.value if eb is not None else None),
            ),
        )
    ts_a, ts_b = _syntax(expected), _syntax(found)
    native = not (ts_a and ts_a.is_compressed) and not (ts_b and ts_b.is_compressed)
    if ea.value == eb.value and (ts_a == ts_b or native):
        return _PixelVerdict(equal=True)
    try:
        a = _decode(expected)
    except Exception as exc:
        return _not_comparable(tag, keyword, f"source copy cannot be decoded: {_why(exc)}")
    try:
        b = _decode(found)
    except Exception as exc:
        return _not_comparable(tag, keyword, f"destination copy cannot be decoded: {_why(exc)}")
    if a.shape != b.shape:
        return _PixelVerdict(
            equal=False,
            diff=ElementDiff(
                tag=tag_text(tag), keyword=keyword, expected=summarise(a), found=summarise(b)
            ),
        )
    if np.array_equal(a, b):
        return _PixelVerdict(equal=True, reencoded=True)
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    max_err = float(err.max())
    changed = int(np.count_nonzero(err))
    bits = int(expected.get("BitsStored", 8) or 8)
    psnr = _psnr(a, b, bits)
    measured = f"max abs error {max_err:g}, PSNR {psnr:.1f} dB, {changed} values differ"
    lossy = rules.lossy
    if lossy is not None:
        if lossy.syntax == JPEGLSNearLossless and lossy.quality is not None:
            ok, bound = max_err <= lossy.quality, f"NEAR {lossy.quality}"
        else:
            ok, bound = psnr >= LOSSY_MIN_PSNR, f"PSNR >= {LOSSY_MIN_PSNR:g} dB"
        note = f"planned lossy ({lossy.syntax}): {measured}; tolerance {bound}"
        if ok:
            return _PixelVerdict(equal=True, note=note, reencoded=True)
        return _PixelVerdict(
            equal=False,
            note=note,
            diff=ElementDiff(
                tag=tag_text(tag),
                keyword=keyword,
                expected=summarise(a),
                found=f"{summarise(b)}; {measured}",
            ),
        )
    if ts_a != ts_b and _is_lossy_syntax(ts_a) and psnr >= DECODER_MIN_PSNR:
        note = f"lossy source ({ts_a}) decoded by another codec: {measured}"
        return _PixelVerdict(equal=True, note=note, reencoded=True)
    return _PixelVerdict(
        equal=False,
        diff=ElementDiff(
            tag=tag_text(tag),
            keyword=keyword,
            expected=summarise(a),
            found=f"{summarise(b)}; {measured}",
        ),
    )


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:120]}"


def _not_comparable(tag: BaseTag, keyword: str, why: str) -> _PixelVerdict:
    return _PixelVerdict(
        equal=False,
        note=why,
        diff=ElementDiff(tag=tag_text(tag), keyword=keyword, expected="(decoded)", found=why),
    )


# -- one instance ---------------------------------------------------------------------------


def compare_instance(
    sop_uid: str, expected: Dataset, found: Dataset, rules: CompareRules
) -> ImageComparison:
    """The destination's copy (found) against the source's (expected), under the plan's rules.

    Both datasets must carry their File Meta (transfer syntax) for pixel data to decode.
    """
    pixels = compare_pixels(expected, found, rules)
    skip = set(rules.skip)
    if pixels.reencoded:
        skip |= ENCODING_ATTRIBUTES
    diffs = diff_datasets(expected, found, skip=skip)
    diffs.extend(_corrections(found, rules.corrections))
    if pixels.diff is not None:
        diffs.append(pixels.diff)
    diffs.sort(key=lambda d: d.tag)
    return ImageComparison(
        sop_uid=sop_uid, equal=not diffs, differences=tuple(diffs), note=pixels.note
    )
