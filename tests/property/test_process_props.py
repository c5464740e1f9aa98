"""Properties of apply_corrections on CT_small.dcm (Explicit VR LE, ISO_IR 100).

1. Any valid LO, SH, PN or DA value, ASCII, Latin-1 or beyond, round-trips exactly: the
   output reads back with the planned value and every other element, nested ones included,
   reads back as before; applying the same correction again returns the same bytes.
2. When the value fits the file's character set, only the target element's bytes change
   (and the Original Attributes Sequence is added); otherwise the character set becomes
   ISO_IR 192 and nothing else changes in value.
3. Invalid values raise InputError, and the message never contains the value.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement

from pacsmig.apply.process import CorrectionError, apply_corrections, corrected_value
from pacsmig.errors import InputError
from pacsmig.plan.model import Correction
from tests.unit.test_process import assert_only_planned_changes, read, sample

pytestmark = pytest.mark.property

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHEN = dt.datetime(2024, 3, 5, 14, 7, 9)
CT = "CT_small.dcm"

# Letters a PACS meets: ASCII, Latin-1, Latin Extended, Greek, Cyrillic, CJK, kana, Hangul.
_LETTERS = st.one_of(
    st.characters(min_codepoint=0x41, max_codepoint=0x5A),
    st.characters(min_codepoint=0x61, max_codepoint=0x7A),
    st.characters(min_codepoint=0x30, max_codepoint=0x39),
    st.sampled_from(list("ÄÖÜäöüßÉÈéèçñøØåÅ")),
    st.sampled_from(list("ŁłŚśŽžČčŐő")),
    st.sampled_from(list("ΑΒΓΔαβγδ")),
    st.sampled_from(list("АБВГДЖИЛМНОПабвгджилмноп")),
    st.sampled_from(list("山田太郎花子東京")),
    st.sampled_from(list("やまだたろうヤマダ")),
    st.sampled_from(list("김희중홍길동")),
)
_INNER = st.one_of(_LETTERS, st.sampled_from(list(" -'.,/()&_+")))


def _text(max_chars: int) -> st.SearchStrategy[str]:
    """1..max_chars characters, no backslash or control characters, no edge spaces."""
    if max_chars == 1:
        return _LETTERS
    body = st.text(_INNER, min_size=0, max_size=max_chars - 2)
    return st.one_of(_LETTERS, st.builds(lambda a, b, z: a + b + z, _LETTERS, body, _LETTERS))


_COMPONENT = st.text(_LETTERS, min_size=0, max_size=10)


@st.composite
def person_names(draw: st.DrawFn) -> str:
    groups = []
    for _ in range(draw(st.integers(1, 3))):
        parts = draw(st.lists(_COMPONENT, min_size=1, max_size=5))
        groups.append("^".join(parts)[:64])
    if not groups[-1]:
        groups[-1] = draw(_text(10))
    return "=".join(groups)


dates = st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))

CORRECTIONS = st.one_of(
    st.builds(lambda v: Correction(keyword="PatientID", before="", after=v), _text(64)),
    st.builds(lambda v: Correction(keyword="StudyDescription", before="", after=v), _text(64)),
    st.builds(lambda v: Correction(keyword="AccessionNumber", before="", after=v), _text(16)),
    st.builds(lambda v: Correction(keyword="PatientName", before="", after=v), person_names()),
    st.builds(lambda v: Correction(keyword="PatientBirthDate", before="", after=v), dates),
)


def _fits_latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@SETTINGS
@given(fix=CORRECTIONS)
def test_valid_values_round_trip_and_only_the_target_changes(fix: Correction) -> None:
    data = sample(CT)
    out = apply_corrections(data, [fix], modified_at=WHEN)
    before, after = read(data), read(out)
    assert corrected_value(after, fix.keyword) == fix.after
    assert_only_planned_changes(data, out, [fix], charset_may_change=True)
    assert apply_corrections(out, [fix], modified_at=WHEN) == out

    if corrected_value(before, fix.keyword) == fix.after:
        assert out is data
        return
    if _fits_latin1(fix.after):
        assert after.SpecificCharacterSet == "ISO_IR 100"
        after = read(out)  # afresh: nothing decoded yet
        target = after.get_item(fix.keyword)
        assert isinstance(target, RawDataElement)
        assert bytes(target.value).rstrip(b" ") == fix.after.encode("latin-1")
        # every other element keeps its exact bytes
        for tag in sorted(before.keys()):
            if tag in (target.tag, 0x00080005) or (tag.element == 0 and tag.group > 6):
                continue
            raw_a, raw_b = before.get_item(tag), after.get_item(tag)
            assert isinstance(raw_a, RawDataElement) and isinstance(raw_b, RawDataElement)
            assert raw_a.value == raw_b.value, f"{tag} changed"
    else:
        assert after.SpecificCharacterSet == "ISO_IR 192"
    item = after.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert corrected_value(item, fix.keyword) == corrected_value(before, fix.keyword)


INVALID = st.one_of(
    st.builds(
        lambda v: Correction(keyword="AccessionNumber", before="", after=v),
        st.tuples(_LETTERS, st.text(_INNER, min_size=15, max_size=40), _LETTERS).map("".join),
    ),
    st.builds(
        lambda v: Correction(keyword="PatientID", before="", after=v),
        st.tuples(_text(20), st.sampled_from(["\n", "\t", "\\", "\x00", "\x1b"]), _text(20)).map(
            "".join
        ),
    ),
    st.builds(
        lambda v: Correction(keyword="PatientBirthDate", before="", after=v),
        st.dates().map(lambda d: d.isoformat()),
    ),
    st.builds(
        lambda v: Correction(keyword="PatientName", before="", after=v),
        st.lists(_text(12), min_size=4, max_size=6).map("=".join),
    ),
)


@SETTINGS
@given(fix=INVALID)
def test_invalid_values_raise_without_leaking_the_value(fix: Correction) -> None:
    with pytest.raises(InputError) as err:
        apply_corrections(sample(CT), [fix], modified_at=WHEN)
    assert isinstance(err.value, CorrectionError)
    message = str(err.value)
    assert fix.keyword in message and "\n" not in message
    assert fix.after not in message
    # messages are lower-case ASCII apart from keyword and VR: any token of the value with a
    # digit, a capital or a non-ASCII letter in it would be a leak
    for token in re.findall(r"\w{3,}", fix.after):
        if token.islower() and token.isascii() and token.isalpha():
            continue
        assert token not in message
