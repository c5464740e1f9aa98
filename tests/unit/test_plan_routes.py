"""Route choice at plan time: direct only when nothing must change and the spec allows it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pacsmig.errors import SpecError
from pacsmig.plan.build import planned_transcode, with_route
from pacsmig.plan.model import Correction, StudyAction
from pacsmig.spec.load import spec_from_text
from tests.unit.test_spec_load import GOOD

MIGRATE = StudyAction(study_uid="1.2.3", action="migrate", reason="not_at_destination")


def _spec(destination_extra: str = "", source_extra: str = ""):  # type: ignore[no-untyped-def]
    text = GOOD.replace("  port: 4243\n", "  port: 4243\n" + destination_extra)
    text = text.replace(
        "  retrieve: c-get          # c-get | c-move\n", "  retrieve: c-get\n" + source_extra
    )
    return spec_from_text(text)


def test_without_move_ae_everything_relays() -> None:
    assert with_route(_spec(), MIGRATE).route == "relay"


def test_move_ae_makes_unchanged_studies_direct() -> None:
    spec = _spec("  move_ae: NEWPACS\n")
    assert with_route(spec, MIGRATE).route == "direct"
    corrected = dataclasses.replace(
        MIGRATE, corrections=(Correction(keyword="PatientID", before="A", after="B"),)
    )
    assert with_route(spec, corrected).route == "relay"


@pytest.mark.parametrize(
    "extra",
    [
        "  move_ae: NEWPACS\n  route: relay\n",
        "  move_ae: NEWPACS\n  syntaxes: [jpeg-2000-lossless]\n",
        "  move_ae: NEWPACS\n  lossy: {syntax: jpeg-2000, quality: 10}\n",
    ],
)
def test_relay_setting_or_transcoding_forces_relay(extra: str) -> None:
    action = with_route(_spec(extra), MIGRATE)
    assert action.route == "relay"
    if "syntaxes" in extra:
        assert action.transcode == "prefer:1.2.840.10008.1.2.4.90"
    if "lossy" in extra:
        assert action.transcode == "lossy:1.2.840.10008.1.2.4.91;quality=10"


@pytest.mark.parametrize("action", ["hold", "skip"])
def test_studies_that_do_not_move_get_no_route(action: str) -> None:
    spec = _spec("  move_ae: NEWPACS\n")
    still = dataclasses.replace(MIGRATE, action=action)  # type: ignore[arg-type]
    assert with_route(spec, still).route == ""


def test_lossy_syntax_is_refused_in_the_lossless_list() -> None:
    with pytest.raises(SpecError, match="lossy"):
        _spec("  syntaxes: [jpeg-2000]\n")


def test_parallel_and_associations_are_read() -> None:
    spec = _spec("  associations: 4\n", "  parallel: 3\n")
    assert spec.destination.associations == 4
    assert spec.source.parallel == 3


@given(
    move_ae=st.booleans(),
    route=st.sampled_from(["auto", "relay", "direct"]),
    corrected=st.booleans(),
    transcode=st.sampled_from(["", "  syntaxes: [rle]\n", "  lossy: {syntax: jpeg-2000}\n"]),
)
def test_direct_only_when_nothing_changes(
    move_ae: bool, route: str, corrected: bool, transcode: str
) -> None:
    extra = ("  move_ae: NEWPACS\n" if move_ae else "") + f"  route: {route}\n" + transcode
    spec = _spec(extra)
    action = (
        dataclasses.replace(
            MIGRATE, corrections=(Correction(keyword="PatientSex", before="", after="F"),)
        )
        if corrected
        else MIGRATE
    )
    routed = with_route(spec, action)
    expect_direct = move_ae and route != "relay" and not corrected and not transcode
    assert routed.route == ("direct" if expect_direct else "relay")
    assert bool(routed.transcode) == bool(planned_transcode(spec)) == bool(transcode)
