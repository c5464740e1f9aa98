"""The change-review page: context shape, group order, escaping, and plans without matching."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from pacsmig.plan.model import (
    Correction,
    Endpoint,
    ExpectedSeries,
    Plan,
    PlanHeader,
    StudyAction,
)
from pacsmig.report.review import HOLD_REASONS, render_review, review_context

FP = "f" * 64
XSS_NAME = "<script>alert(1)</script>"
XSS_DESC = '"><img src=x onerror=alert(1)>'


def header(name: str = "site-a 2026") -> PlanHeader:
    return PlanHeader(
        name=name,
        pacsmig_version="0.0.test",
        spec_digest="d" * 16,
        created_at="2026-01-02T03:04:05Z",
        source=Endpoint(ae_title="OLDPACS", host="old.example", port=104),
        destination=Endpoint(ae_title="NEWPACS", host="new.example", port=11112),
    )


def study(
    uid: str,
    action: str = "migrate",
    reason: str = "not_at_destination",
    *,
    corrections: tuple[tuple[str, str, str], ...] = (),
    match: dict[str, Any] | None = None,
    **kw: Any,
) -> StudyAction:
    fields: dict[str, Any] = {
        "patient_id": f"PID-{uid}",
        "patient_name": f"DOE^PAT{uid}",
        "birth_date": "19700101",
        "sex": "F",
        "study_date": "20240305",
        "accession": f"ACC{uid}",
        "description": "CT CHEST",
        "modalities": ("CT",),
        "series": (ExpectedSeries(series_uid=f"1.2.{uid}.1", modality="CT", instances=12),),
    }
    fields.update(kw)
    return StudyAction(
        study_uid=f"1.2.840.{uid}",
        action=action,  # type: ignore[arg-type]
        reason=reason,
        corrections=tuple(Correction(keyword=k, before=b, after=a) for k, b, a in corrections),
        match=match,
        **fields,
    )


def matched(order: str, rule: str, score: float | None = 1.0) -> dict[str, Any]:
    return {"order_id": order, "rule": rule, "score": score}


def held(code: str, *candidates: str) -> dict[str, Any]:
    return {
        "order_id": None,
        "rule": None,
        "score": None,
        "hold_reason": code,
        "candidates": list(candidates),
    }


def sample_plan() -> Plan:
    """Holds of several kinds, a match by every rule, corrections, and hostile values."""
    return Plan(
        header=header(),
        actions=(
            # The plan lists migrations first on purpose: the page must still put holds first.
            study(
                "10",
                corrections=(("PatientName", "DOE^JON", "DOE^JOHN"), ("PatientSex", "", "M")),
                match=matched("ORD-10", "accession"),
            ),
            study(
                "11",
                corrections=(("StudyDescription", "ct chest ", "CT THORAX"),),
                match=matched("ORD-11", "accession"),
                patient_name=XSS_NAME,
                description=XSS_DESC,
            ),
            study("12", match=matched("ORD-12", "accession")),
            study(
                "13",
                corrections=(("PatientName", "DOE^JANE", "SMITH^JANE"), ("PatientSex", "O", "F")),
                match=matched("ORD-13", "accession"),
            ),
            study(
                "20",
                corrections=(("AccessionNumber", "", "A-20"),),
                match=matched("ORD-20", "patient-date-modality"),
            ),
            study(
                "30",
                corrections=(("PatientID", "OLD30", "NEW30"), ("AccessionNumber", "X30", "A-30")),
                match=matched("ORD-30", "demographics", 0.9345),
            ),
            study(
                "40",
                corrections=(("PatientBirthDate", "19700101", "19700110"),),
                match=matched("ORD-40", "override", None),
            ),
            study("50", match=held("no_order")),
            study("51", "skip", "override_skip", match=held("override_skip")),
            study("52", "skip", "already_complete", match=matched("ORD-52", "accession")),
            study(
                "60",
                "hold",
                "ambiguous_candidates",
                match=held("ambiguous_candidates", "ORD1", "ORD2"),
            ),
            study("61", "hold", "order_claimed_twice", match=held("order_claimed_twice", "ORD-X")),
            study("62", "hold", "identity_conflict", match=held("identity_conflict", "ORD-Y")),
            study("63", "hold", "patient_id_conflict", match=held("patient_conflict")),
        ),
    )


def no_match_plan() -> Plan:
    return Plan(
        header=header("no ris"),
        actions=(
            study("1"),
            study("2", "skip", "already_complete"),
            study("3", "hold", "patient_id_conflict", patient_name=XSS_NAME),
            study("4", "migrate", "incomplete_at_destination", series=()),
        ),
    )


class Page(HTMLParser):
    """Tags, texts and attributes of a rendered page, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.scripts: list[str] = []
        self.ids: list[str] = []
        self._in_script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)


def render(plan: Plan, approval: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    ctx = review_context(
        plan, fingerprint=FP, generated_at="2026-01-03T00:00:00Z", approval=approval
    )
    return ctx, render_review(ctx)


def test_context_is_plain_data() -> None:
    ctx, _ = render(sample_plan())
    # Plain JSON types only (a round trip changes nothing).
    assert json.loads(json.dumps(ctx)) == ctx
    for code in (
        "ambiguous_candidates",
        "order_claimed_twice",
        "patient_conflict",
        "patient_id_conflict",
        "identity_conflict",
        "no_order",
        "override_skip",
        "override_unknown_order",
    ):
        assert ctx["reasons"][code] == HOLD_REASONS[code]
        assert ctx["reasons"][code].endswith(".")


def test_summary_counts() -> None:
    ctx, _ = render(sample_plan())
    sm = ctx["summary"]
    assert sm["studies"] == 14
    assert {a["action"]: a["studies"] for a in sm["by_action"]} == {
        "hold": 4,
        "migrate": 8,
        "skip": 2,
    }
    assert {r["rule"]: r["studies"] for r in sm["by_rule"]} == {
        "accession": 5,
        "patient-date-modality": 1,
        "demographics": 1,
        "override": 1,
        "": 6,
    }
    reasons = {r["code"]: r["studies"] for r in sm["by_hold_reason"]}
    assert reasons == {
        "ambiguous_candidates": 1,
        "order_claimed_twice": 1,
        "patient_conflict": 1,
        "identity_conflict": 1,
        "no_order": 1,
        "override_skip": 1,
    }
    by_kw = {c["keyword"]: c["corrections"] for c in sm["corrections_by_keyword"]}
    assert by_kw == {
        "PatientID": 1,
        "PatientName": 2,
        "PatientBirthDate": 1,
        "PatientSex": 2,
        "AccessionNumber": 2,
        "StudyDescription": 1,
    }
    assert sm["corrections"] == 9
    assert sm["studies_with_corrections"] == 6


def test_group_order_and_sorting() -> None:
    ctx, _ = render(sample_plan())
    kinds = [(g["kind"], g["key"]) for g in ctx["groups"]]
    assert kinds == [
        ("hold", "ambiguous_candidates"),
        ("hold", "order_claimed_twice"),
        ("hold", "patient_conflict"),
        ("hold", "identity_conflict"),
        ("rule", "accession"),
        ("rule", "patient-date-modality"),
        ("rule", "demographics"),
        ("rule", "override"),
        ("none", "no_order"),
        ("skip", "skip"),
    ]
    assert [t["count"] for t in ctx["toc"]] == [1, 1, 1, 1, 5, 1, 1, 1, 1, 1]
    accession = ctx["groups"][4]
    patterns = [p["label"] for p in accession["patterns"]]
    # Corrected first, the two studies with the same keyword set together, uncorrected last.
    assert patterns == ["PatientName + PatientSex", "StudyDescription", "no corrections"]
    uids = [s["study_uid"] for p in accession["patterns"] for s in p["studies"]]
    assert uids == ["1.2.840.10", "1.2.840.13", "1.2.840.11", "1.2.840.12", "1.2.840.52"]
    first = accession["patterns"][0]["studies"][0]
    assert (
        first["order_id"] == "ORD-10" and first["rule"] == "accession" and first["score"] == "1.00"
    )
    assert first["corrections"][0] == {
        "keyword": "PatientName",
        "before": "DOE^JON",
        "after": "DOE^JOHN",
        "before_show": None,
        "after_show": None,
    }
    # The empty value and a trailing blank are made visible.
    assert first["corrections"][1]["before_show"] == [["e", "(empty)"]]
    desc = accession["patterns"][1]["studies"][0]["corrections"][0]
    assert desc["before_show"] == [["t", "ct chest"], ["w", "\u2423"]]
    demo = ctx["groups"][6]["patterns"][0]["studies"][0]
    assert demo["score"] == "0.93" and demo["score_low"] is True
    override = ctx["groups"][7]["patterns"][0]["studies"][0]
    assert override["score"] == ""
    hold = ctx["groups"][0]["patterns"][0]["studies"][0]
    assert hold["candidates"] == ["ORD1", "ORD2"] and hold["order_id"] == ""
    # Unusual actions say why under the description; an ordinary migration says nothing.
    already = accession["patterns"][2]["studies"][1]
    assert already["note"] == "Already complete at the destination."
    assert first["note"] == ""
    skipped = ctx["groups"][9]["patterns"][0]["studies"][0]
    assert skipped["note"] == HOLD_REASONS["override_skip"]


def test_holds_precede_matches_in_document_order() -> None:
    ctx, html = render(sample_plan())
    page = Page(html)
    order = [g["id"] for g in ctx["groups"]]
    positions = [page.ids.index(gid) for gid in order]
    assert positions == sorted(positions)
    texts = page.text
    first_match = min(
        texts.index(u) for u in ("1.2.840.10", "1.2.840.20", "1.2.840.30", "1.2.840.40")
    )
    last_hold = max(
        texts.index(u) for u in ("1.2.840.60", "1.2.840.61", "1.2.840.62", "1.2.840.63")
    )
    assert last_hold < first_match
    assert texts.index("Held: ambiguous candidates") < texts.index("Matched by accession number")
    # Candidates of a hold are listed.
    assert "ORD1" in texts and "ORD2" in texts and "ORD-X" in texts


def test_every_correction_appears() -> None:
    plan = sample_plan()
    _, html = render(plan)
    page = Page(html)
    dels = _element_texts(html, "del")
    inss = _element_texts(html, "ins")
    for a in plan.actions:
        for c in a.corrections:
            assert (c.before.strip() or "(empty)") in {
                d.replace("\u2423", "").strip() for d in dels
            }
            assert c.after in inss
            assert c.keyword in page.text


def test_hostile_values_are_escaped() -> None:
    _, html = render(sample_plan())
    assert XSS_NAME not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS_DESC not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    page = Page(html)
    assert [t for t, _ in page.tags].count("script") == 1
    assert not any(t == "img" for t, _ in page.tags)
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert XSS_NAME in page.text and XSS_DESC in page.text  # shown to the reader as text
    assert "alert" not in page.scripts[0]
    # Self-contained: no external resources.
    for _, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith("#"), value


def test_plan_without_match_renders_without_match_columns() -> None:
    ctx, html = render(no_match_plan())
    assert ctx["has_match"] is False
    assert [g["kind"] for g in ctx["groups"]] == ["hold", "migrate", "skip"]
    assert ctx["summary"]["by_rule"] == []
    page = Page(html)
    headers = _element_texts(html, "th")
    assert "Order" not in headers and "Candidates" not in headers
    assert "Patient" in headers
    for uid in ("1.2.840.1", "1.2.840.2", "1.2.840.3", "1.2.840.4"):
        assert uid in page.text
    assert "&lt;script&gt;" in html
    assert [t for t, _ in page.tags].count("script") == 1


def test_empty_plan_renders() -> None:
    ctx, html = render(Plan(header=header(), actions=()))
    assert ctx["groups"] == [] and ctx["summary"]["studies"] == 0
    assert "The plan has no studies." in Page(html).text


def test_signoff_states() -> None:
    plan = no_match_plan()
    ctx, html = render(plan)
    assert ctx["signoff"]["state"] == "none" and "Not signed off." in Page(html).text
    ctx, html = render(
        plan, {"by": "Dr <b>X</b>", "at": "2026-01-03", "fingerprint": FP, "note": ""}
    )
    assert ctx["signoff"]["state"] == "signed"
    assert "Dr &lt;b&gt;X&lt;/b&gt;" in html
    ctx, html = render(plan, {"by": "X", "at": "2026-01-03", "fingerprint": "0" * 64})
    assert ctx["signoff"]["state"] == "stale"
    assert "does not cover this plan" in Page(html).text
    assert FP in Page(html).text


def test_unexpected_match_values_do_not_break_the_page() -> None:
    plan = Plan(
        header=header(),
        actions=(
            study("1", match={}),
            study("2", match={"order_id": "O2", "rule": "fancy-new-rule", "score": "high"}),
            study(
                "3",
                "hold",
                "ambiguous_candidates",
                match={"hold_reason": "ambiguous_candidates", "candidates": "O9"},
            ),
            study("4", "hold", "brand_new_code", match={"hold_reason": "brand_new_code"}),
        ),
    )
    ctx, html = render(plan)
    titles = [g["title"] for g in ctx["groups"]]
    assert titles[0] == "Held: ambiguous candidates"
    assert "Held: brand new code" in titles
    assert "Matched by rule fancy-new-rule" in titles
    assert ctx["reasons"]["brand_new_code"] == "Brand new code."
    assert "O9" in Page(html).text


def _element_texts(html: str, tag: str) -> list[str]:
    """The text content of every ``tag`` element (nested markup flattened)."""

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.out: list[str] = []
            self.depth = 0

        def handle_starttag(self, t: str, attrs: list[tuple[str, str | None]]) -> None:
            if t == tag:
                self.depth += 1
                self.out.append("")

        def handle_endtag(self, t: str) -> None:
            if t == tag:
                self.depth -= 1

        def handle_data(self, data: str) -> None:
            if self.depth:
                self.out[-1] += data

    c = Collect()
    c.feed(html)
    c.close()
    return [s.strip() for s in c.out]


def test_match_shapes_written_by_reconcile() -> None:
    """The exact match dicts pacsmig.reconcile writes: skip override, migrate-as-is, and a
    matched study held because the destination already has uncorrected copies."""
    plan = Plan(
        header=header(),
        actions=(
            study(
                "1",
                "skip",
                "override_skip",
                match={"order_id": None, "rule": "override", "score": None, "skip": True},
            ),
            study(
                "2",
                match={
                    "order_id": None,
                    "rule": None,
                    "score": None,
                    "hold_reason": "",
                    "candidates": [],
                    "unmatched": True,
                },
            ),
            study(
                "3",
                "hold",
                "corrections_at_destination",
                detail="5 instances there",
                corrections=(("PatientName", "DOE^JON", "DOE^JOHN"),),
                match=matched("ORD-3", "accession"),
            ),
            study("4", match=matched("ORD-4", "accession")),
        ),
    )
    ctx, html = render(plan)
    groups = [(g["kind"], g["key"]) for g in ctx["groups"]]
    assert groups == [
        ("hold", "corrections_at_destination"),
        ("rule", "accession"),
        ("none", "no_order"),
        ("skip", "skip"),
    ]
    held_row = ctx["groups"][0]["patterns"][0]["studies"][0]
    assert held_row["order_id"] == "ORD-3" and held_row["note"] == "5 instances there"
    reasons = {r["code"]: r["studies"] for r in ctx["summary"]["by_hold_reason"]}
    assert reasons == {"corrections_at_destination": 1, "no_order": 1, "override_skip": 1}
    assert {r["rule"]: r["studies"] for r in ctx["summary"]["by_rule"]} == {"accession": 2, "": 2}
    text = Page(html).text
    assert text.index("1.2.840.3") < text.index("1.2.840.4") < text.index("1.2.840.2")
    assert "ORD-3" in text and "DOE^JOHN" in text
