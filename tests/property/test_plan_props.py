"""Plans round-trip through their file format, and fingerprints are stable and sensitive."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.inventory.model import Holdings, StudyRecord
from pacsmig.plan.build import build_plan
from pacsmig.plan.codec import dumps, fingerprint, loads, read_plan, write_plan
from pacsmig.spec.load import spec_from_text
from tests.strategies import world
from tests.unit.test_spec_load import GOOD

SPEC = spec_from_text(GOOD)


@settings(max_examples=150, deadline=None)
@given(world(), st.sampled_from(["2026-01-01T00:00:00Z", "2027-05-06T07:08:09Z"]))
def test_write_read_round_trip_and_stable_fingerprint(
    w: tuple[list[StudyRecord], dict[str, Holdings]], created: str
) -> None:
    studies, holdings = w
    plan = build_plan(SPEC, studies, holdings, created_at=created)
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.json"
        fp = write_plan(plan, path)
        again = read_plan(path)
    assert again == plan
    assert fingerprint(again) == fp
    # Planning the same world at another time gives the same fingerprint.
    later = build_plan(SPEC, list(reversed(studies)), holdings, created_at="2030-01-01T00:00:00Z")
    assert fingerprint(later) == fp
    assert loads(dumps(plan)) == plan


@settings(max_examples=100, deadline=None)
@given(world())
def test_every_study_gets_exactly_one_action(
    w: tuple[list[StudyRecord], dict[str, Holdings]],
) -> None:
    studies, holdings = w
    plan = build_plan(SPEC, studies, holdings, created_at="2026-01-01T00:00:00Z")
    assert sorted(a.study_uid for a in plan.actions) == sorted(s.study_uid for s in studies)
    for action in plan.actions:
        study = next(s for s in studies if s.study_uid == action.study_uid)
        if study.other_patient_ids:
            assert action.action == "hold"
        elif action.action == "skip" and action.reason == "already_complete":
            held = holdings[study.study_uid].series_counts
            assert held == {s.series_uid: s.instance_count for s in study.series}
        assert action.instance_count == study.instance_count


@settings(max_examples=100, deadline=None)
@given(world(), st.data())
def test_any_change_to_an_action_changes_the_fingerprint(
    w: tuple[list[StudyRecord], dict[str, Holdings]], data: st.DataObject
) -> None:
    studies, holdings = w
    plan = build_plan(SPEC, studies, holdings, created_at="2026-01-01T00:00:00Z")
    if not plan.actions:
        return
    i = data.draw(st.integers(0, len(plan.actions) - 1))
    action = plan.actions[i]
    field = data.draw(
        st.sampled_from(["patient_id", "accession", "found_at_destination", "reason"])
    )
    new = dataclasses.replace(
        action,
        **{
            field: (getattr(action, field) + 1)
            if field == "found_at_destination"
            else getattr(action, field) + "x"
        },
    )
    changed = dataclasses.replace(plan, actions=(*plan.actions[:i], new, *plan.actions[i + 1 :]))
    assert fingerprint(changed) != fingerprint(plan)
