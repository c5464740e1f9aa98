"""Properties of the migration order over random plans, appointment lists and order values."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.plan.model import StudyAction
from pacsmig.plan.priority import prioritise
from pacsmig.reconcile.normalize import id_key
from pacsmig.spec.model import Priority

PATIENTS = ("P1", "P2", "p3", "P4", "")
ORDER_IDS = ("O1", "O2", "O3", "O4", "O5", None)
VALUES = ("STAT", "urgent", "ROUTINE", "1", "2.5", "x", "")


@st.composite
def plans(draw: st.DrawFn) -> list[StudyAction]:
    n = draw(st.integers(0, 25))
    uids = draw(
        st.lists(
            st.from_regex(r"1\.2\.[0-9]{1,4}", fullmatch=True), min_size=n, max_size=n, unique=True
        )
    )
    out = []
    for uid in uids:
        order_id = draw(st.sampled_from(ORDER_IDS))
        out.append(
            StudyAction(
                study_uid=uid,
                action=draw(st.sampled_from(("migrate", "migrate", "hold", "skip"))),
                reason="x",
                patient_id=draw(st.sampled_from(PATIENTS)),
                study_date=draw(st.sampled_from(("", "20190101", "20200101", "20200102"))),
                match={"order_id": order_id, "rule": "accession"} if order_id else None,
                priority=draw(st.sampled_from(("", "stale"))),
            )
        )
    return out


priorities = st.builds(
    Priority,
    patients=st.sampled_from((None, Path("upcoming.txt"))),
    orders_column=st.sampled_from((None, "urgency")),
    orders_values=st.sampled_from(((), ("STAT", "URGENT", "ROUTINE"))),
    order=st.sampled_from(("newest-first", "oldest-first")),
)
appointments = st.frozensets(st.sampled_from(("P1", "P3", "nobody")), max_size=3)
order_values = st.dictionaries(st.sampled_from(ORDER_IDS[:-1]), st.sampled_from(VALUES))


@settings(max_examples=100, deadline=None)
@given(plans(), priorities, appointments, order_values, st.randoms(use_true_random=False))
def test_order_is_a_function_of_the_set_of_actions(
    actions: list[StudyAction],
    priority: Priority,
    patients: frozenset[str],
    values: dict[str, str],
    rnd: random.Random,
) -> None:
    shuffled = list(actions)
    rnd.shuffle(shuffled)
    out = prioritise(actions, priority, patients=patients, order_values=values)
    again = prioritise(shuffled, priority, patients=patients, order_values=values)
    assert out == again


@settings(max_examples=100, deadline=None)
@given(
    plans(),
    priorities | st.builds(Priority, order=st.just("as-found")),
    appointments,
    order_values,
)
def test_every_action_once_holds_first_appointments_before_the_rest(
    actions: list[StudyAction],
    priority: Priority,
    patients: frozenset[str],
    values: dict[str, str],
) -> None:
    out = prioritise(actions, priority, patients=patients, order_values=values)
    assert sorted(a.study_uid for a in out) == sorted(a.study_uid for a in actions)
    kinds = [a.action for a in out]
    assert kinds == sorted(kinds, key=("hold", "migrate", "skip").index)
    keys = {id_key(p) for p in patients}
    migrate = [a for a in out if a.action == "migrate"]
    flags = [bool(a.patient_id) and id_key(a.patient_id) in keys for a in migrate]
    assert flags == sorted(flags, reverse=True), "appointment studies precede the rest"
    for a, flag in zip(migrate, flags, strict=True):
        assert (a.priority == "appointment") == flag
        if not flag and a.priority:
            assert a.priority.startswith("orders:") and priority.orders_column
    assert all(not a.priority for a in out if a.action != "migrate")
    # Nothing but the label changed.
    by_uid = {a.study_uid: a for a in actions}
    for a in out:
        original = by_uid[a.study_uid]
        assert a.action == original.action and a.match == original.match
        assert a.patient_id == original.patient_id and a.study_date == original.study_date
    if priority.order == "as-found" and not priority.orders_column and not patients:
        assert [a.study_uid for a in migrate] == [
            a.study_uid for a in actions if a.action == "migrate"
        ]
    elif not priority.orders_column and not patients and priority.order != "as-found":
        dated = [a.study_date for a in migrate if a.study_date]
        newest = priority.order == "newest-first"
        assert dated == sorted(dated, reverse=newest)
