"""Canonical forms for the values a study and an order are compared on.

Two kinds of output: *canonical* values (what the plan records and what a correction writes,
so they stay faithful: accents and case of IDs are kept) and *keys* (what matching compares,
so they forgive what humans and interfaces routinely get wrong: case, accents, punctuation).

Every function is pure. The ``normalize_*`` functions that can meet malformed input raise
``ValueError`` with a message that names the problem but never echoes the value, because the
value is patient data and the caller turns the message into a one-line ``InputError``.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from typing import Final

# Tokens export tools write for "no value". Matching them case-insensitively keeps 'null' and
# 'n/a' from becoming a patient's name or a shared, falsely-matching accession number.
EMPTY_TOKENS: Final = frozenset({"", "NULL", "N/A"})

_DATE_FORMATS: Final = (
    # (pattern, group order as year, month, day)
    (re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})"), (1, 2, 3)),
    (re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"), (1, 2, 3)),
    (re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})"), (1, 2, 3)),
    (re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4})"), (3, 2, 1)),
)

_SEX: Final = {
    "": "",
    "M": "M",
    "MALE": "M",
    "F": "F",
    "FEMALE": "F",
    "O": "O",
    "OTHER": "O",
    # HL7 table 0001 'A' (ambiguous) has no DICOM code of its own; DICOM's 'O' is the closest.
    "A": "O",
    "U": "",
    "UNK": "",
    "UNKNOWN": "",
    # HL7 'N' (not applicable) says nothing about the patient, like 'U'.
    "N": "",
}

# Letters NFKD does not decompose; without these 'Ø' and 'O' would never compare equal.
_FOLD_TABLE: Final = str.maketrans(
    {
        "Ø": "O",
        "ø": "o",
        "Æ": "AE",
        "æ": "ae",
        "Œ": "OE",
        "œ": "oe",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Þ": "TH",
        "þ": "th",
        "ß": "SS",
        "ı": "i",
    }
)
# Apostrophes and dots vanish (O'Brien == OBRIEN, St. == ST), and so do the '?' and U+FFFD a
# charset mismatch leaves where a letter was (HORV?TH): a missing letter costs less than a
# word break. Every other non-word character separates words, so 'SMITH-JONES' and
# 'SMITH JONES' give the same tokens.
_NAME_DROP: Final = re.compile(r"['’‘`´.?\ufffd]")
_NAME_SPLIT: Final = re.compile(r"[\W_]+")

# DICOM modality defined terms (PS3.3 C.7.3.1.1.1 plus retired ones still found in archives).
# fmt: off
DICOM_MODALITIES: Final = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CD", "CF", "CFM", "CP", "CR", "CS", "CT",
    "CTPROTOCOL", "DD", "DF", "DG", "DM", "DMS", "DOC", "DS", "DX", "EC", "ECG", "EPS", "ES",
    "FA", "FID", "FS", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO", "LEN",
    "LP", "LS", "M3D", "MA", "MG", "MR", "MS", "NM", "OAM", "OCT", "OP", "OPM", "OPR", "OPT",
    "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP",
    "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN",
    "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "ST", "STAIN", "TEXTUREMAP", "TG",
    "US", "VA", "VF", "XA", "XC",
})
# fmt: on
# RIS spellings of a modality (words, and HL7 table 0074 diagnostic service sections that
# OBR-24 carries), and the radiography codes archives and RISs use interchangeably for one
# kind of exam (a 'CR' order is routinely acquired as 'DX').
_MODALITY_ALIASES: Final = {
    "MRI": "MR",
    "NMR": "MR",
    "NMS": "NM",
    "PET": "PT",
    "MAMMO": "MG",
    "VUS": "US",
    "CUS": "US",
    "RX": "DX",
    "XR": "DX",
    "CR": "DX",
    "DR": "DX",
    "RG": "DX",
}


def clean(value: str | None) -> str:
    """``value`` stripped, or '' when it is one of the "no value" spellings."""
    if value is None:
        return ""
    text = value.strip()
    return "" if text.upper() in EMPTY_TOKENS else text


def normalize_text(value: str | None) -> str:
    """Free text (descriptions): empty spellings to '', runs of whitespace to one space."""
    return " ".join(clean(value).split())


def normalize_id(value: str | None) -> str:
    """An identifier (patient ID, accession, order ID) as recorded: stripped, case kept.

    Case is kept because the destination PACS looks identifiers up verbatim; only matching
    (``id_key``) forgives it.
    """
    return clean(value)


def id_key(value: str | None) -> str:
    """What two identifiers are compared on: stripped, inner whitespace removed, uppercase."""
    return "".join(clean(value).split()).upper()


def parse_date(value: str | None) -> _dt.date | None:
    """The calendar date in one of the accepted spellings, None when empty.

    Accepted: YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD, DD.MM.YYYY. Nothing else, because a spelling
    like 03/04/2024 cannot be read without guessing which number is the month.
    """
    text = clean(value)
    if not text:
        return None
    for pattern, (yi, mi, di) in _DATE_FORMATS:
        m = pattern.fullmatch(text)
        if m is not None:
            try:
                return _dt.date(int(m.group(yi)), int(m.group(mi)), int(m.group(di)))
            except ValueError:
                raise ValueError("not a calendar date") from None
    raise ValueError("not a date in YYYYMMDD, YYYY-MM-DD, YYYY/MM/DD or DD.MM.YYYY form")


def normalize_date(value: str | None) -> str:
    """A date as DICOM DA (YYYYMMDD), '' when empty; ``ValueError`` when malformed."""
    date = parse_date(value)
    return "" if date is None else date.strftime("%Y%m%d")


def lenient_date(value: str | None) -> str:
    """``normalize_date``, or the cleaned input when it is malformed.

    For values read from a PACS: a malformed date there is still what the archive holds, and
    a correction must show it as it is rather than fail the whole plan.
    """
    try:
        return normalize_date(value)
    except ValueError:
        return clean(value)


def normalize_sex(value: str | None) -> str:
    """DICOM Patient's Sex: 'M', 'F', 'O' or '' (unknown); ``ValueError`` for other codes."""
    text = clean(value).upper()
    try:
        return _SEX[text]
    except KeyError:
        raise ValueError("unknown sex code") from None


def lenient_sex(value: str | None) -> str:
    """``normalize_sex``, or the cleaned, uppercased input when it is not a known code."""
    try:
        return normalize_sex(value)
    except ValueError:
        return clean(value).upper()


def normalize_pn(value: str | None) -> str:
    """A person name as canonical DICOM PN ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``.

    Accepts DICOM PN and ``FAMILY, GIVEN MIDDLE`` (first word after the comma is the given
    name, the rest the middle name). Uppercase with accents kept (the canonical value is
    written back into the archive, so it must stay faithful), whitespace collapsed, trailing
    empty components dropped. A value with neither '^' nor ',' is a family name only, which
    is how PS3.5 6.2.1.1 reads a PN without component separators. Of several component
    groups (``alphabetic=ideographic=phonetic``) the first non-empty one is kept, because
    that is the one RIS feeds and the other PACS compare. More than five components (not
    valid PN) are folded into the suffix rather than rejected, since archives hold such
    names and matching must not fail on them.
    """
    text = clean(value)
    if not text:
        return ""
    if "=" in text:
        text = next((g for g in text.split("=") if g.strip(" ^")), "")
    if "^" in text:
        comps = text.split("^")
    elif "," in text:
        family, _, rest = text.partition(",")
        words = rest.split()
        comps = [family, words[0] if words else "", " ".join(words[1:])]
    else:
        comps = [text]
    comps = [" ".join(c.split()).upper() for c in comps]
    if len(comps) > 5:
        comps = [*comps[:4], " ".join(c for c in comps[4:] if c)]
    while comps and not comps[-1]:
        comps.pop()
    return "^".join(comps)


def fold(text: str) -> str:
    """Accents and ligatures folded to ASCII-like letters, uppercase; other scripts kept."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_TABLE))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).upper()


def name_key(value: str | None) -> str:
    """The matching key of a name: canonical PN components, accents folded, punctuation gone.

    Components stay separated by '^' (so a scorer can still tell family from given name);
    words inside a component are separated by one space.
    """
    comps = []
    for comp in normalize_pn(value).split("^"):
        words = _NAME_SPLIT.split(_NAME_DROP.sub("", fold(comp)))
        comps.append(" ".join(w for w in words if w))
    while comps and not comps[-1]:
        comps.pop()
    return "^".join(comps)


def normalize_modality(value: str | None) -> str:
    """A modality code as written: uppercase, stripped ('' when empty)."""
    return "".join(clean(value).split()).upper()


def modality_key(value: str | None) -> str:
    """The modality a study/order pair is compared on; '' when it is not a DICOM modality.

    Aliases fold RIS spellings ('MRI') and interchangeable radiography codes (CR/DX) into one
    code. A value that is no DICOM modality at all (a RIS section such as 'RAD') gives '', which
    matching treats as "not stated" rather than as a mismatch that would block every pair.
    """
    code = normalize_modality(value)
    code = _MODALITY_ALIASES.get(code, code)
    return code if code in DICOM_MODALITIES else ""
