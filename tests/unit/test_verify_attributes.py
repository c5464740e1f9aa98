from __future__ import annotations

import pytest

from pacsmig.verify.counts import _same_text


@pytest.mark.parametrize(
    ("keyword", "expected", "found", "same"),
    [
        ("PatientName", "DOE^JOHN", "DOE^JOHN^^", True),
        ("PatientName", "DOE^JOHN", "DOE^JANE", False),
        ("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Tarou=^=^", True),
        ("PatientName", "Yamada^Tarou=山田^太郎", "Tanaka^Tarou=^", False),
        ("PatientID", "ID1 ", "ID1", True),
        ("PatientID", "MRN9", "MRN8", False),
        # An ASCII expectation is never excused: only lost characters are.
        ("AccessionNumber", "A1", "", False),
        ("StudyDescription", "Люкceмбypг", "ceyp", True),
    ],
)
def test_attribute_comparison(keyword: str, expected: str, found: str, same: bool) -> None:
    assert _same_text(keyword, expected, found) is same
