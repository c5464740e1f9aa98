"""Matching studies to orders: each rule, every hold reason, overrides, corrections."""

from __future__ import annotations

from typing import Any

import pytest

from pacsmig.errors import SpecError
from pacsmig.inventory.model import StudyRecord
from pacsmig.reconcile.match import (
    DEFAULT_RULES,
    REASONS,
    MatchResult,
    MatchRule,
    corrections_for,
    match_studies,
    name_similarity,
    parse_match_rules,
)
from pacsmig.reconcile.orders import Order

pytestmark = pytest.mark.unit

ACC = (MatchRule(rule="accession"),)
PDM = (MatchRule(rule="patient-date-modality", date_window_days=2),)
DEMO = (MatchRule(rule="demographics", min_similarity=0.92, date_window_days=2),)


def study(uid: str, **kw: Any) -> StudyRecord:
    base: dict[str, Any] = {
        "patient_id": "P1",
        "patient_name": "DOE^JOHN",
        "birth_date": "19700102",
        "sex": "M",
        "study_date": "20240305",
        "accession": "",
        "modalities": ("CT",),
    }
    return StudyRecord(study_uid=uid, **{**base, **kw})


def order(oid: str, **kw: Any) -> Order:
    base: dict[str, Any] = {
        "accession": "",
        "patient_id": "P1",
        "patient_name": "DOE^JOHN",
        "birth_date": "19700102",
        "sex": "M",
        "study_date": "20240305",
        "modality": "CT",
    }
    return Order(order_id=oid, **{**base, **kw})


def one(
    studies: list[StudyRecord],
    orders: list[Order],
    rules: Any = DEFAULT_RULES,
    overrides: dict[str, str | None] | None = None,
) -> MatchResult:
    results = match_studies(studies, orders, rules, overrides)
    return results[0]


# --- accession -------------------------------------------------------------------------


def test_accession_matches_ignoring_case_and_blanks() -> None:
    r = one(
        [study("1", accession=" acc-7 ", patient_id="OTHER")], [order("O1", accession="ACC-7")], ACC
    )
    assert r == MatchResult(
        study_uid="1", status="matched", order_id="O1", rule="accession", score=1.0
    )


def test_empty_accessions_never_match() -> None:
    r = one([study("1", accession="NULL")], [order("O1", accession="")], ACC)
    assert r.status == "unmatched" and r.reason == "no_order"


def test_accession_shared_by_two_orders_is_held_not_guessed() -> None:
    orders = [order("O2", accession="A1"), order("O1", accession="A1")]
    r = one([study("1", accession="A1")], orders)
    assert (r.status, r.reason, r.rule, r.candidates) == (
        "hold",
        "ambiguous_candidates",
        "accession",
        ("O1", "O2"),
    )


def test_ambiguity_does_not_fall_through_to_weaker_rules() -> None:
    # The patient/date/modality rule alone would pick O1, but the accession rule saw two.
    orders = [
        order("O1", accession="A1"),
        order("O2", accession="A1", patient_id="P9", study_date="20200101"),
    ]
    r = one([study("1", accession="A1")], orders)
    assert r.status == "hold" and r.candidates == ("O1", "O2")


def test_multi_procedure_accession_is_narrowed_by_modality() -> None:
    orders = [
        order("OCT", accession="A1", modality="CT"),
        order("OMR", accession="A1", modality="MR"),
    ]
    studies = [study("1", accession="A1", modalities=("MR", "SR")), study("2", accession="A1")]
    got = match_studies(studies, orders, ACC)
    assert [(r.status, r.order_id) for r in got] == [("matched", "OMR"), ("matched", "OCT")]


def test_accession_of_another_patient_is_rejected_and_the_right_order_found() -> None:
    # A typo that lands on a neighbour's accession: different MRN, birth date and name.
    neighbour = order(
        "ON", accession="A2", patient_id="P2", patient_name="ROE^JANE", birth_date="19800101"
    )
    own = order("O1", accession="A1")
    r = one([study("1", accession="A2")], [neighbour, own])
    assert (r.status, r.order_id, r.rule) == ("matched", "O1", "patient-date-modality")


def test_accession_of_another_patient_with_no_other_fit_is_held() -> None:
    neighbour = order(
        "ON", accession="A2", patient_id="P2", patient_name="ROE^JANE", birth_date="19800101"
    )
    r = one([study("1", accession="A2")], [neighbour])
    assert (r.status, r.reason, r.rule, r.candidates) == (
        "hold",
        "identity_conflict",
        "accession",
        ("ON",),
    )


def test_accession_hit_after_patient_merge_is_kept() -> None:
    # MRN differs (patient merged) but the birth date agrees: not a contradiction.
    r = one([study("1", accession="A1", patient_id="OLD")], [order("O1", accession="A1")], ACC)
    assert r.status == "matched" and r.order_id == "O1"


def test_relative_with_similar_name_does_not_corroborate_an_accession() -> None:
    # JOHN/JEAN under one long family name score 0.85: close, but not the same person.
    relative = order(
        "OR", accession="A2", patient_id="P2", patient_name="KOWALSKI^JEAN", birth_date="19400101"
    )
    r = one([study("1", accession="A2", patient_name="KOWALSKI^JOHN")], [relative], ACC)
    assert r.reason == "identity_conflict"


def test_shared_birth_date_does_not_outvote_another_id_and_name() -> None:
    # Accession numbers are sequential, so a typo lands on an order of the same day; one
    # patient in ~30,000 shares the birth date by chance.
    stranger = order("OS", accession="A2", patient_id="P2", patient_name="PEREZ^FRANCOISE")
    r = one([study("1", accession="A2", patient_name="WINWIN^DAVID")], [stranger], ACC)
    assert (r.status, r.reason) == ("hold", "identity_conflict")


def test_patient_merge_and_married_name_still_match_by_accession() -> None:
    o = order("O1", accession="A1", patient_id="NEW", patient_name="JONES^JANE")
    r = one([study("1", accession="A1", patient_id="OLD", patient_name="SMITH^JANE")], [o], ACC)
    assert (r.status, r.order_id) == ("matched", "O1")


# --- patient-date-modality -------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "matched"), [(0, True), (-2, True), (2, True), (3, False), (-3, False)]
)
def test_patient_date_window(days: int, matched: bool) -> None:
    dates = {0: "20240305", -2: "20240303", 2: "20240307", 3: "20240308", -3: "20240302"}
    r = one([study("1")], [order("O1", study_date=dates[days])], PDM)
    assert (r.status == "matched") is matched
    if matched:
        assert (r.rule, r.score) == ("patient-date-modality", 1.0)


def test_window_crosses_month_and_year_ends() -> None:
    r = one([study("1", study_date="20240101")], [order("O1", study_date="2023-12-30")], PDM)
    assert r.status == "matched"


@pytest.mark.parametrize(
    ("study_mods", "order_mod", "matched"),
    [
        (("CT", "SR"), "CT", True),
        (("MR",), "CT", False),
        (("DX",), "CR", True),  # interchangeable radiography codes
        (("MR",), "MRI", True),
        (("MR",), "", True),  # order states no modality
        ((), "CT", True),  # study states none
        (("MR",), "RAD", True),  # RIS section, not a modality: "not stated"
    ],
)
def test_modality_compatibility(study_mods: tuple[str, ...], order_mod: str, matched: bool) -> None:
    r = one([study("1", modalities=study_mods)], [order("O1", modality=order_mod)], PDM)
    assert (r.status == "matched") is matched


def test_patient_id_compare_ignores_case_and_blanks() -> None:
    r = one([study("1", patient_id=" p1 ")], [order("O1", patient_id="P1")], PDM)
    assert r.status == "matched"


def test_two_orders_in_the_window_are_held() -> None:
    orders = [order("O1"), order("O2", study_date="20240306")]
    r = one([study("1")], orders, PDM)
    assert (r.status, r.reason, r.candidates) == ("hold", "ambiguous_candidates", ("O1", "O2"))


def test_mrn_reused_for_another_person_is_a_conflict() -> None:
    stranger = order("O1", patient_name="ROE^JANE", birth_date="19800101")
    r = one([study("1")], [stranger], PDM)
    assert (r.status, r.reason) == ("hold", "identity_conflict")


def test_malformed_study_dates_are_no_evidence_not_an_error() -> None:
    r = one([study("1", study_date="2024-3-5")], [order("O1")], PDM)
    assert r.status == "unmatched"


# --- demographics ----------------------------------------------------------------------


def merged(uid: str, **kw: Any) -> StudyRecord:
    """A study filed under an MRN the RIS no longer uses, without accession."""
    return study(uid, patient_id="OLDMRN", **kw)


@pytest.mark.parametrize(
    "name",
    [
        "DOE^JOHN",
        "John^Doe",  # swapped components
        "Doe, John",
        "DOE^JOHN^ALBERT",  # middle name on one side only
        "Dœ^John",
    ],
)
def test_demographics_accepts_the_same_name_in_other_forms(name: str) -> None:
    r = one([merged("1", patient_name=name)], [order("O1", patient_id="NEW")], DEMO)
    assert (r.status, r.rule) == ("matched", "demographics")
    assert r.score is not None and r.score >= 0.92


def test_demographics_tolerates_a_typo_in_a_long_name() -> None:
    r = one(
        [merged("1", patient_name="KOWALSKI^JEAN PIERRE")],
        [order("O1", patient_id="NEW", patient_name="KOWALSKY^JEAN PIERRE")],
        DEMO,
    )
    assert r.status == "matched"
    assert r.score == pytest.approx(0.95, abs=0.01)


@pytest.mark.parametrize(
    ("study_kw", "order_kw"),
    [
        ({"patient_name": "DOE^JANE"}, {}),  # a twin
        ({}, {"birth_date": "19700103"}),  # another birth date
        ({"birth_date": ""}, {}),  # no birth date to block on
        ({}, {"study_date": "20240310"}),  # outside the window
        ({"modalities": ("US",)}, {}),
    ],
)
def test_demographics_rejects(study_kw: dict[str, Any], order_kw: dict[str, Any]) -> None:
    r = one([merged("1", **study_kw)], [order("O1", patient_id="NEW", **order_kw)], DEMO)
    assert r.status == "unmatched"


def test_name_similarity_is_symmetric_and_bounded() -> None:
    assert name_similarity("Doe^John", "JOHN^DOE") == 1.0
    assert name_similarity("", "DOE^JOHN") == 0.0
    assert name_similarity("", "") == 0.0
    a = name_similarity("VDORAK^LISA", "DVORAK^LISA")
    assert a == name_similarity("DVORAK^LISA", "VDORAK^LISA")
    assert a > 0.9  # a first-letter typo must not re-sort the words
    assert name_similarity("SMITH^ANNA", "JONES^PETER") < 0.5
    pairs = [("DOE^JOHN^PAUL", "JOHN^DOE"), ("Doe, John Paul", "JOHN^DOE^P"), ("A^B^C", "C^B")]
    for x, y in pairs:
        assert name_similarity(x, y) == name_similarity(y, x)


# --- one study, one order --------------------------------------------------------------


def test_order_claimed_by_two_studies_holds_both() -> None:
    studies = [study("1"), study("2", modalities=("CT", "SR"))]
    got = match_studies(studies, [order("O1")], PDM)
    assert [(r.status, r.reason, r.candidates) for r in got] == [
        ("hold", "order_claimed_twice", ("O1",)),
        ("hold", "order_claimed_twice", ("O1",)),
    ]


def test_order_taken_by_a_stronger_rule_is_not_matched_again() -> None:
    studies = [study("1", accession="A1"), study("2")]
    got = match_studies(studies, [order("O1", accession="A1")])
    assert [(r.status, r.rule) for r in got] == [("matched", "accession"), ("unmatched", None)]


def test_order_taken_leaves_the_remaining_one_for_the_weaker_rule() -> None:
    studies = [study("1", accession="A1"), study("2")]
    orders = [order("O1", accession="A1"), order("O2", accession="A2", study_date="20240306")]
    got = match_studies(studies, orders)
    assert [(r.order_id, r.rule) for r in got] == [
        ("O1", "accession"),
        ("O2", "patient-date-modality"),
    ]


def test_results_one_per_study_in_input_order() -> None:
    studies = [study(str(i), accession=f"A{i}") for i in (3, 1, 2)]
    orders = [order(f"O{i}", accession=f"A{i}") for i in (1, 2, 3)]
    got = match_studies(studies, orders)
    assert [(r.study_uid, r.order_id) for r in got] == [("3", "O3"), ("1", "O1"), ("2", "O2")]


def test_no_orders_at_all() -> None:
    got = match_studies([study("1")], [])
    assert got == [MatchResult(study_uid="1", status="unmatched", reason="no_order")]
    assert match_studies([], [order("O1")]) == []


def test_duplicate_order_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        match_studies([study("1")], [order("O1"), order("O1")])


# --- patient conflict and overrides ----------------------------------------------------


def test_study_under_two_patient_ids_is_held() -> None:
    r = one([study("1", accession="A1", other_patient_ids=("P7",))], [order("O1", accession="A1")])
    assert (r.status, r.reason, r.order_id) == ("hold", "patient_conflict", None)


def test_override_beats_every_rule() -> None:
    studies = [study("1", accession="A1"), study("2", accession="A2")]
    orders = [order("O1", accession="A1"), order("O2", accession="A2")]
    got = match_studies(studies, orders, overrides={"1": "o2", "2": "O1"})
    assert [(r.order_id, r.rule, r.score) for r in got] == [
        ("O2", "override", None),
        ("O1", "override", None),
    ]


def test_override_skip_and_unknown_order() -> None:
    studies = [study("1", accession="A1"), study("2", accession="A2")]
    got = match_studies(studies, [order("O1", accession="A1")], overrides={"1": None, "2": "O404"})
    assert [(r.status, r.reason, r.rule) for r in got] == [
        ("skip", "override_skip", "override"),
        ("hold", "override_unknown_order", "override"),
    ]


def test_override_resolves_a_patient_conflict() -> None:
    r = one([study("1", other_patient_ids=("P7",))], [order("O1")], overrides={"1": "O1"})
    assert (r.status, r.order_id) == ("matched", "O1")


def test_overridden_order_is_not_given_to_another_study() -> None:
    studies = [study("1", accession="ZZ"), study("2", accession="A1")]
    got = match_studies(studies, [order("O1", accession="A1")], overrides={"1": "O1"})
    assert [(r.status, r.order_id) for r in got] == [("matched", "O1"), ("unmatched", None)]


def test_two_overrides_onto_one_order_are_held() -> None:
    got = match_studies([study("1"), study("2")], [order("O1")], overrides={"1": "O1", "2": "O1"})
    assert {(r.status, r.reason) for r in got} == {("hold", "order_claimed_twice")}


def test_every_reason_code_is_documented() -> None:
    assert set(REASONS) >= {
        "",
        "ambiguous_candidates",
        "order_claimed_twice",
        "patient_conflict",
        "no_order",
        "override_skip",
        "override_unknown_order",
        "identity_conflict",
    }


# --- rule configuration ----------------------------------------------------------------


def test_parse_match_rules_from_the_spec() -> None:
    rules = parse_match_rules(
        [
            {"rule": "accession"},
            {"rule": "patient-date-modality", "date_window_days": 2},
            {"rule": "demographics", "min_similarity": 0.92, "date_window_days": 2},
        ]
    )
    assert rules == DEFAULT_RULES


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "non-empty list"),
        ("accession", "non-empty list"),
        ([{"rule": "fuzzy"}], r"ris.match\[0\]: unknown rule 'fuzzy'"),
        ([{"rule": "accession", "min_similarity": 0.9}], r"'min_similarity' does not apply"),
        ([{"rule": "demographics", "min_similarity": 1.5}], r"ris.match\[0\]: min_similarity"),
        ([{"rule": "demographics", "min_similarity": True}], r"min_similarity"),
        (
            [{"rule": "accession"}, {"rule": "patient-date-modality", "date_window_days": -1}],
            r"ris.match\[1\]: date_window_days",
        ),
        ([{"rule": "patient-date-modality", "date_window_days": 1.5}], r"whole number"),
        ([{"date_window_days": 1}], r"'rule' key"),
    ],
)
def test_parse_match_rules_rejects(items: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_match_rules(items)


# --- corrections -----------------------------------------------------------------------

ALL = [
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDescription",
]


def test_corrections_list_every_changed_attribute() -> None:
    s = study(
        "1",
        patient_id="OLD",
        patient_name="Doe^Jon",
        birth_date="19700101",
        sex="",
        accession="",
        description="ct head",
    )
    o = order(
        "O1",
        patient_id="NEW",
        patient_name="DOE^JOHN",
        birth_date="19700102",
        sex="M",
        accession="A1",
        description="CT Head w/o contrast",
    )
    assert corrections_for(s, o, ALL) == [
        ("PatientID", "OLD", "NEW"),
        ("PatientName", "Doe^Jon", "DOE^JOHN"),
        ("PatientBirthDate", "19700101", "19700102"),
        ("PatientSex", "", "M"),
        ("AccessionNumber", "", "A1"),
        ("StudyDescription", "ct head", "CT Head w/o contrast"),
    ]


def test_spellings_that_canonicalise_alike_are_not_changes() -> None:
    s = study(
        "1",
        patient_name="Doe^John^^",
        birth_date="1970-01-02",
        sex="male",
        accession=" A1 ",
        description="CT  head",
    )
    o = order("O1", patient_name="DOE^JOHN", accession="A1", description="CT HEAD")
    assert corrections_for(s, o, ALL) == []


def test_corrections_are_case_sensitive_for_ids() -> None:
    s = study("1", patient_id="abc", accession="a1")
    o = order("O1", patient_id="ABC", accession="A1")
    assert corrections_for(s, o, ["PatientID", "AccessionNumber"]) == [
        ("PatientID", "abc", "ABC"),
        ("AccessionNumber", "a1", "A1"),
    ]


def test_empty_order_values_never_erase_and_only_listed_keywords_count() -> None:
    s = study("1", patient_id="OLD", sex="F")
    o = order("O1", patient_id="NEW", sex="")
    assert corrections_for(s, o, ["PatientSex"]) == []
    assert corrections_for(s, o, ["PatientSex", "PatientID", "PatientID"]) == [
        ("PatientID", "OLD", "NEW")
    ]


def test_malformed_archive_value_shows_as_it_is() -> None:
    s = study("1", birth_date="1970-1-2")
    assert corrections_for(s, order("O1"), ["PatientBirthDate"]) == [
        ("PatientBirthDate", "1970-1-2", "19700102")
    ]


def test_unknown_correction_keyword() -> None:
    with pytest.raises(SpecError, match="'StudyDate' is not a correctable attribute"):
        corrections_for(study("1"), order("O1"), ["StudyDate"])


# --- accession guard: a typo that lands on the same patient's other order ---------------------


def _typo_scene(**study_kw: Any) -> tuple[list[StudyRecord], list[Order]]:
    """S1 was really O1 (05 March) but carries A2, the accession of the patient's next exam
    O2 (06 March), whose own study S2 has no accession: the bench's wrong_accession and its
    follow_up partner."""
    studies = [
        study("1", accession="A2", description="CT HEAD WITHOUT CONTRAST", **study_kw),
        study("2", study_date="20240306", description="CT CHEST WITH CONTRAST"),
    ]
    orders = [
        order("O1", accession="A1", description="CT HEAD WITHOUT CONTRAST"),
        order("O2", accession="A2", study_date="20240306", description="CT CHEST WITH CONTRAST"),
    ]
    return studies, orders


def test_accession_typo_onto_a_sibling_order_is_held_not_matched() -> None:
    studies, orders = _typo_scene()
    got = match_studies(studies, orders)
    # Without the guard: S1 -> O2 by accession and S2 -> O1 by elimination, both wrong.
    assert [(r.status, r.reason, r.rule, r.candidates) for r in got] == [
        ("hold", "ambiguous_candidates", "accession", ("O1", "O2")),
        ("hold", "ambiguous_candidates", "patient-date-modality", ("O1", "O2")),
    ]


def test_accession_typo_is_held_when_nothing_tells_the_siblings_apart() -> None:
    # Same day, same procedure, no description: the accession is the only evidence.
    studies = [study("1", accession="A2"), study("2")]
    orders = [order("O1", accession="A1"), order("O2", accession="A2")]
    got = match_studies(studies, orders)
    assert [(r.status, r.candidates) for r in got] == [
        ("hold", ("O1", "O2")),
        ("hold", ("O1", "O2")),
    ]


@pytest.mark.parametrize(
    ("s1_kw", "o2_date"),
    [
        # The description agrees with the accession's order and not with the sibling's.
        ({"description": "Ct Chest W/ Cont"}, "20240305"),
        # Same day would tie; the date agrees with the accession's order only.
        ({"description": ""}, "20240306"),
    ],
)
def test_accession_confirmed_by_date_or_description_is_kept(
    s1_kw: dict[str, Any], o2_date: str
) -> None:
    s1_date = o2_date
    studies = [
        study("1", accession="A2", study_date=s1_date, **s1_kw),
        study("2", study_date="20240305", description="CT HEAD"),
    ]
    orders = [
        order("O1", accession="A1", description="CT HEAD WITHOUT CONTRAST"),
        order("O2", accession="A2", study_date=o2_date, description="CT CHEST WITH CONTRAST"),
    ]
    got = match_studies(studies, orders)
    assert [(r.order_id, r.rule) for r in got] == [
        ("O2", "accession"),
        ("O1", "patient-date-modality"),
    ]


def test_evidence_against_the_accession_holds_even_when_another_vote_is_for_it() -> None:
    # Date for O2 (same day), description clearly O1's: contradicting evidence, a hold.
    studies = [
        study("1", accession="A2", study_date="20240306", description="CT HEAD WO"),
        study("2", study_date="20240306"),
    ]
    orders = [
        order("O1", accession="A1", description="CT HEAD WITHOUT CONTRAST"),
        order("O2", accession="A2", study_date="20240306", description="CT CHEST WITH CONTRAST"),
    ]
    got = match_studies(studies, orders)
    assert got[0].status == "hold" and got[0].candidates == ("O1", "O2")


def test_sibling_order_without_a_rival_study_does_not_contest_the_accession() -> None:
    # A duplicate booking nobody else could have been imaged for: the accession stands.
    studies = [study("1", accession="A1")]
    orders = [order("O1", accession="A1"), order("O2", accession="D1")]
    assert one(studies, orders).order_id == "O1"


def test_sibling_claimed_by_its_own_accession_does_not_contest() -> None:
    studies = [study("1", accession="A2"), study("2", accession="A1"), study("3")]
    orders = [order("O1", accession="A1"), order("O2", accession="A2")]
    got = match_studies(studies, orders)
    assert [r.order_id for r in got] == ["O2", "O1", None]


def test_guard_ignores_other_patients_and_far_dates_and_other_modalities() -> None:
    studies = [
        study("1", accession="A2"),
        study("2", patient_id="P9", birth_date="19800101", patient_name="ROE^JANE"),
        study("3", study_date="20240320"),
        study("4", modalities=("MR",)),
    ]
    orders = [
        order("O2", accession="A2"),
        order("O9", patient_id="P9", birth_date="19800101", patient_name="ROE^JANE"),
        order("O3", study_date="20240320"),
        order("O4", modality="MR"),
    ]
    got = match_studies(studies, orders)
    assert [r.order_id for r in got] == ["O2", "O9", "O3", "O4"]


def test_elimination_never_takes_an_order_of_a_held_accession_contest() -> None:
    # S1 has no series information, so it fits the CT O1 and the MR O2 alike, and nothing but
    # its accession (A2) says which; S2, a CT, sees only O1. If A2 is a typo, S1 is O1.
    studies = [study("1", accession="A2", modalities=()), study("2")]
    orders = [order("O1", accession="A1"), order("O2", accession="A2", modality="MR")]
    got = match_studies(studies, orders)
    assert got[0].status == "hold" and got[0].candidates == ("O1", "O2")
    assert (got[1].status, got[1].reason, got[1].candidates) == (
        "hold",
        "ambiguous_candidates",
        ("O1", "O2"),
    )


def test_description_similarity_forgives_spelling_not_body_parts() -> None:
    from pacsmig.reconcile.match import DESC_AGREE, DESC_MARGIN, description_similarity

    same = description_similarity("CT HEAD WITHOUT CONTRAST", "Ct Head W/O Cont")
    other = description_similarity("CT HEAD WITHOUT CONTRAST", "CT CHEST WITHOUT CONTRAST")
    assert same >= DESC_AGREE and same - other >= DESC_MARGIN
    assert description_similarity("", "CT HEAD") == 0.0
