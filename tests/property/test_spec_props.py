"""The spec loader never crashes: any text yields a Spec or a one-line SpecError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.errors import SpecError
from pacsmig.spec.load import spec_from_text
from tests.unit.test_spec_load import GOOD

LINES = GOOD.splitlines()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        spec_from_text(text)
    except SpecError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(LINES) - 1),
    replacement=st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
        st.sampled_from(
            [
                "port: -1",
                "port: x",
                "kind: tape",
                "  bogus: 1",
                "version: 2",
                "- a",
                ": :",
                "!!binary x",
            ]
        ),
    ),
)
def test_mutated_spec_is_valid_or_one_line_error(index: int, replacement: str) -> None:
    lines = list(LINES)
    lines[index] = replacement
    try:
        spec = spec_from_text("\n".join(lines) + "\n")
    except SpecError as exc:
        message = str(exc)
        assert "\n" not in message and message
    else:
        # Whatever survived validation is well-typed.
        assert 1 <= spec.source.port <= 65535 and 1 <= spec.destination.port <= 65535
        assert spec.source.retrieve in ("c-get", "c-move")
        assert 1 <= len(spec.local.ae_title) <= 16


@given(
    port=st.integers(min_value=1, max_value=65535),
    aet=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=16),
    retrieve=st.sampled_from(["c-get", "c-move"]),
)
def test_valid_values_round_trip(port: int, aet: str, retrieve: str) -> None:
    text = GOOD.replace("port: 4242", f"port: {port}").replace(
        "ae_title: LEGACY", f"ae_title: '{aet}'"
    )
    text = text.replace("retrieve: c-get", f"retrieve: {retrieve}")
    spec = spec_from_text(text)
    assert (spec.source.port, spec.source.ae_title, spec.source.retrieve) == (port, aet, retrieve)
