"""The compiled plan-schema check and jsonschema agree on what is a valid plan."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.inventory.model import Holdings, StudyRecord
from pacsmig.plan.build import build_plan
from pacsmig.plan.codec import _fast_valid, _schema_error, dumps
from pacsmig.spec.load import spec_from_text
from tests.strategies import world
from tests.unit.test_spec_load import GOOD

SPEC = spec_from_text(GOOD)
JUNK = st.one_of(
    st.none(), st.integers(-3, 3), st.text(max_size=5), st.lists(st.integers(), max_size=2)
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=None)
@given(world(), st.data())
def test_fast_and_full_validation_agree_on_mutated_plans(
    w: tuple[list[StudyRecord], dict[str, Holdings]], data: st.DataObject
) -> None:
    studies, holdings = w
    doc = json.loads(dumps(build_plan(SPEC, studies, holdings, created_at="2026-01-01T00:00:00Z")))
    assert _fast_valid(doc) and _schema_error(doc) is None
    paths = _paths(doc)
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JUNK)
    assert _fast_valid(doc) == (_schema_error(doc) is None), path
