"""The verification report: statuses, figures, completeness, charts, escaping, exports.

`build_sample` writes a plan and a journal through the Journal API with one study of each
outcome a migration can leave (plus any number of plain verified ones), and returns what
each study's status and reason must be: the expectations come from how the sample was
built, not from the report code.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacsmig.journal.store import FAILED, SENT, Journal
from pacsmig.plan.build import header_for
from pacsmig.plan.model import (
    Correction,
    ExpectedSeries,
    Plan,
    QuarantinedFile,
    StudyAction,
)
from pacsmig.report import charts
from pacsmig.report.completeness import CATEGORY_OF_STATUS, account
from pacsmig.report.context import LIST_LIMIT, STATUS_LABEL, STATUS_ORDER, build_context
from pacsmig.report.render import render_csv, render_html, render_json
from tests.unit.test_plan_codec import SPEC

HOSTILE = "</script><script>alert(1)</script>"
HOSTILE_REASON = '<img src=x onerror="alert(2)">'

# kind -> (plan action, plan reason, expected status, expected reason)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "verified": ("migrate", "not_at_destination", "verified", ""),
    "missing": ("migrate", "not_at_destination", "missing", "instances_missing"),
    "not_found": ("migrate", "incomplete_at_destination", "missing", "not_found"),
    "attributes": ("migrate", "not_at_destination", "attributes_differ", "attributes_differ"),
    "images": ("migrate", "not_at_destination", "images_differ", "images_differ"),
    "not_committed": ("migrate", "not_at_destination", "not_committed", "commitment_timeout"),
    "verify_error": ("migrate", "not_at_destination", "verify_error", "verify_error"),
    "failed": ("migrate", "not_at_destination", "failed", "destination_unavailable"),
    "refused": ("migrate", "not_at_destination", "refused", "source_changed"),
    "held": ("hold", "patient_id_conflict", "held", "patient_id_conflict"),
    "skipped": ("skip", "empty_study", "skipped", "empty_study"),
    "complete_verified": ("skip", "already_complete", "verified", ""),
    "complete_unverified": ("skip", "already_complete", "skipped", "already_complete"),
    "not_applied": ("migrate", "not_at_destination", "not_applied", ""),
    "interrupted": ("migrate", "not_at_destination", "not_applied", "interrupted"),
    "unverified": ("migrate", "not_at_destination", "unverified", ""),
    "stale": ("migrate", "not_at_destination", "unverified", "sent_after_verification"),
}
VERIFY_STATUS = {
    "verified": "verified",
    "missing": "missing",
    "not_found": "not_found",
    "attributes": "attributes_differ",
    "images": "images_differ",
    "not_committed": "not_committed",
    "verify_error": "error",
    "complete_verified": "verified",
    "stale": "missing",
}
PER_SERIES = 3


@dataclass
class Sample:
    plan: Plan
    journal: Path
    kind_of: dict[str, str]  # study_uid -> kind
    sent: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # reason -> failed instances
    uid_of: dict[str, str] = field(default_factory=dict)  # kind -> study_uid

    def expected(self, uid: str) -> tuple[str, str]:
        return KINDS[self.kind_of[uid]][2:]


def build_sample(
    tmp: Path,
    *,
    extra_verified: int = 0,
    hostile: bool = False,
    kinds: tuple[str, ...] = tuple(KINDS),
    failed_instances: int = 1,
) -> Sample:
    """A plan and journal holding one study of each kind, plus extra verified ones."""
    all_kinds = [*kinds, *["verified"] * extra_verified]
    actions = []
    kind_of: dict[str, str] = {}
    for i, kind in enumerate(all_kinds):
        uid = f"1.2.826.0.1.3680043.10.1.{i}"
        action, reason = KINDS[kind][:2]
        modality = ("CT", "MR", "US")[i % 3]
        n_series = 2 if kind in ("missing", "attributes") else 1
        per_series = max(PER_SERIES, failed_instances) if kind == "failed" else PER_SERIES
        actions.append(
            StudyAction(
                study_uid=uid,
                action=action,  # type: ignore[arg-type]
                reason=reason,
                patient_id=HOSTILE if hostile and kind == "attributes" else f"PID{i:04d}",
                patient_name=HOSTILE if hostile and kind == "attributes" else f"DOE^JANE{i}",
                study_date=f"2024{1 + i % 12:02d}{1 + i % 28:02d}",
                accession=f"ACC{i:05d}",
                description=f"{kind} study",
                modalities=(modality,),
                series=tuple(
                    ExpectedSeries(
                        series_uid=f"{uid}.{s}",
                        modality=modality,
                        number=str(s + 1),
                        description=f"series {s + 1}",
                        instances=per_series,
                    )
                    for s in range(n_series)
                ),
                route=("relay", "direct")[i % 2] if action == "migrate" else "",
                corrections=(
                    (Correction(keyword="AccessionNumber", before="OLD1", after=f"ACC{i:05d}"),)
                    if kind == "attributes"
                    else ()
                ),
            )
        )
        kind_of[uid] = kind
    plan = Plan(header=header_for(SPEC, "2026-01-01T00:00:00Z"), actions=tuple(actions))
    sample = Sample(plan=plan, journal=tmp / "sample.journal.sqlite", kind_of=kind_of)
    sample.uid_of = {k: u for u, k in reversed(kind_of.items())}

    with Journal.open(sample.journal) as journal:
        run = journal.start_run("apply", "f" * 64, {"by": "Dr Apply"})
        for a in actions:
            kind = kind_of[a.study_uid]
            if a.action != "migrate" or kind == "not_applied":
                continue
            if kind == "refused":
                journal.set_study(run, a.study_uid, "refused", "source_changed", "4 instances now")
                continue
            sops = [
                (f"{s.series_uid}.{k}", s.series_uid, "1.2.840.10008.5.1.4.1.1.2")
                for s in a.series
                for k in range(s.instances)
            ]
            journal.plan_instances(run, a.study_uid, sops)
            for n, (sop, _, _) in enumerate(sops):
                if kind == "failed" and n < failed_instances:
                    reason = HOSTILE_REASON if hostile else "destination_unavailable"
                    journal.set_instance(
                        run, sop, FAILED, code=0xA700, reason=reason, detail="out of resources"
                    )
                    sample.failed[reason] += 1
                else:
                    journal.set_instance(run, sop, SENT, code=0)
                    sample.sent += 1
            if kind != "interrupted":
                state = "incomplete" if kind == "failed" else "transferred"
                journal.set_study(run, a.study_uid, state, "instances_failed" * (kind == "failed"))
        journal.finish_run(run, "failed")
        verify = journal.start_run("verify", "f" * 64, None)
        for a in actions:
            kind = kind_of[a.study_uid]
            if kind in VERIFY_STATUS:
                found, detail = _detail(a, VERIFY_STATUS[kind], hostile)
                journal.record_verification(
                    verify, a.study_uid, VERIFY_STATUS[kind], a.instance_count, found, detail
                )
        journal.finish_run(verify, "mismatch")
        stale = sample.uid_of.get("stale")
        if stale:
            journal.set_study(run, stale, "transferred")
    if stale:
        # Apply ran again after that verification: the journal's word on it is newer.
        with sqlite3.connect(sample.journal) as conn:
            conn.execute(
                "UPDATE studies SET updated_at='2999-01-01T00:00:00.000Z' WHERE study_uid=?",
                (stale,),
            )
    return sample


def _detail(a: StudyAction, status: str, hostile: bool) -> tuple[int, dict[str, Any]]:
    series = []
    for n, s in enumerate(a.series):
        missing = [f"{s.series_uid}.0"] if status == "missing" and n == 1 else []
        found = 0 if status == "not_found" else s.instances - len(missing)
        series.append(
            {
                "series_uid": s.series_uid,
                "expected": s.instances,
                "found": found,
                "missing": missing,
            }
        )
    found_total = sum(s["found"] for s in series)
    detail: dict[str, Any] = {
        "status": status,
        "expected_instances": a.instance_count,
        "found_instances": found_total,
        "series": series,
        "extra_instances": 0,
        "attributes": [],
        "note": "",
        "levels": ["counts", "instances", "attributes", "images", "commitment"],
        "instances": {"missing": [m for s in series for m in s["missing"]], "extra": []},
    }
    if status == "attributes_differ":
        detail["attributes"] = [
            {"keyword": "PatientName", "expected": a.patient_name, "found": "DOE^JOHN"},
            {"keyword": "AccessionNumber", "expected": a.accession, "found": "OLD1"},
        ]
    if status == "images_differ":
        detail["images"] = {
            "sampled": 2,
            "equal": 1,
            "different": [
                {
                    "sop_uid": f"{a.series[0].series_uid}.1",
                    "differences": [
                        {
                            "tag": "(7FE0,0010)",
                            "keyword": "PixelData",
                            "expected": "4096 bytes sha256 1a2b",
                            "found": HOSTILE if hostile else "4096 bytes sha256 9f8e",
                        }
                    ],
                }
            ],
            "errors": [{"sop_uid": f"{a.series[0].series_uid}.2", "reason": "not retrieved"}],
        }
    if status == "not_committed":
        detail["commitment"] = {
            "requested": a.instance_count,
            "committed": 0,
            "failed": [],
            "timed_out": True,
        }
    if status == "error":
        detail["images"] = {
            "sampled": 1,
            "equal": 0,
            "different": [],
            "errors": [{"sop_uid": "x", "reason": "timeout"}],
        }
    return found_total, detail


def context_of(sample: Sample, **kw: Any) -> dict[str, Any]:
    with Journal.open(sample.journal) as journal:
        return build_context(sample.plan, journal, kw.pop("approval", None), generated_at="now")


@pytest.fixture()
def sample(tmp_path: Path) -> Sample:
    return build_sample(tmp_path)


# -- statuses ----------------------------------------------------------------------------
def test_every_study_gets_the_status_and_reason_its_journal_implies(sample: Sample) -> None:
    ctx = context_of(sample)
    got = {r["study_uid"]: (r["status"], r["reason"]) for r in ctx["studies"]}
    assert got == {uid: sample.expected(uid) for uid in sample.kind_of}
    # The reader sees problems first.
    ranks = [STATUS_ORDER.index(r["status"]) for r in ctx["studies"]]
    assert ranks == sorted(ranks)


def test_a_journal_without_verification_by_study_is_read_by_its_last_verify_run() -> None:
    from types import SimpleNamespace

    from pacsmig.report.context import _verifications

    run = SimpleNamespace(run_id=4)
    detail = {"status": "missing", "found_instances": 2, "series": []}
    old = SimpleNamespace(
        latest_verification=lambda: (
            run,
            {"1.2": {"status": "missing", "expected": 3, "found": 2, "detail": detail, "at": "t"}},
        )
    )
    assert _verifications(old) == {  # type: ignore[arg-type]
        "1.2": {"status": "missing", "found": 2, "at": "t", "run_id": 4, "detail": detail}
    }
    assert _verifications(SimpleNamespace(latest_verification=lambda: None)) == {}  # type: ignore[arg-type]


def test_drill_down_facts_follow_the_verification_detail(sample: Sample) -> None:
    rows = {r["study_uid"]: r for r in context_of(sample)["studies"]}
    missing = rows[sample.uid_of["missing"]]
    assert missing["missing_count"] == 1
    assert missing["series"][1]["missing"] == [f"{missing['series'][1]['series_uid']}.0"]
    assert missing["series"][1]["found"] == PER_SERIES - 1
    attrs = rows[sample.uid_of["attributes"]]
    assert [(d["keyword"], d["found"]) for d in attrs["attribute_diffs"]] == [
        ("PatientName", "DOE^JOHN"),
        ("AccessionNumber", "OLD1"),
    ]
    images = rows[sample.uid_of["images"]]["images"]
    assert images["different"][0]["differences"][0]["tag"] == "(7FE0,0010)"
    assert images["errors_total"] == 1
    commitment = rows[sample.uid_of["not_committed"]]["commitment"]
    assert commitment["timed_out"] and commitment["committed"] == 0
    failed = rows[sample.uid_of["failed"]]
    assert [f["reason"] for f in failed["failures"]] == ["destination_unavailable"]
    assert failed["failures"][0]["code"] == "0xA700" and failed["failed"] == 1
    # A journal written before the verification levels: missing keys are no error.
    assert rows[sample.uid_of["verified"]]["images"] is None


def test_failed_instances_are_listed_up_to_the_limit_and_counted_in_full(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, kinds=("failed",), failed_instances=LIST_LIMIT + 7)
    row = context_of(sample)["studies"][0]
    assert len(row["failures"]) == LIST_LIMIT
    assert row["failed"] == LIST_LIMIT + 7


# -- summary and completeness ------------------------------------------------------------
def test_summary_figures_count_what_the_journal_holds(sample: Sample) -> None:
    ctx = context_of(sample)
    fig = {f["key"]: f for f in ctx["figures"]}
    migrate = [a for a in sample.plan.actions if a.action == "migrate"]
    assert fig["planned"]["studies"] == len(migrate)
    assert fig["planned"]["instances"] == sum(a.instance_count for a in migrate)
    assert fig["sent"]["instances"] == sample.sent
    assert fig["failed"]["instances"] == sum(sample.failed.values())
    assert {r["reason"]: r["instances"] for r in fig["failed"]["reasons"]} == dict(sample.failed)
    kinds = Counter(sample.kind_of.values())
    assert fig["verified"]["studies"] == kinds["verified"] + kinds["complete_verified"]
    assert fig["held"]["studies"] == kinds["held"]
    assert fig["refused"]["reasons"][0]["reason"] == "source_changed"
    problems = {r["reason"]: r["studies"] for r in fig["problems"]["reasons"]}
    assert problems == {
        "instances_missing": 1,
        "not_found": 1,
        "attributes_differ": 1,
        "images_differ": 1,
        "commitment_timeout": 1,
        "verify_error": 1,
    }


def test_completeness_accounts_for_every_study_and_names_what_blocks(sample: Sample) -> None:
    c = context_of(sample)["completeness"]
    assert not c["complete"]
    assert c["unaccounted"] == 0 and c["accounted"] == len(sample.kind_of)
    assert sum(cat["studies"] for cat in c["categories"]) == len(sample.kind_of)
    by_cat = {cat["category"]: cat["studies"] for cat in c["categories"]}
    expected = Counter(CATEGORY_OF_STATUS[sample.expected(u)[0]] for u in sample.kind_of)
    assert by_cat == {k: expected.get(k, 0) for k in by_cat}
    migrate = sum(1 for a in sample.plan.actions if a.action == "migrate")
    assert c["migrate_total"] == migrate and c["migrate_verified"] == 1
    assert c["blockers"][0].startswith(f"{migrate - 1} of {migrate} studies to migrate")
    assert c["statement"].startswith("Incomplete: ")


def test_complete_only_when_every_study_to_migrate_is_verified(tmp_path: Path) -> None:
    ok = build_sample(tmp_path, kinds=("verified", "held", "skipped", "complete_unverified"))
    ctx = context_of(ok)
    c = ctx["completeness"]
    assert c["complete"], c
    assert c["statement"].startswith("Complete: every planned study was verified")
    assert "1 held for a person's decision" in c["statement"]
    html = render_html("report.html.j2", ctx)
    assert "Complete: every planned study was verified" in html

    # The same world with quarantined files and an inventory that is provably incomplete.
    plan = dataclasses.replace(
        ok.plan,
        quarantine=(QuarantinedFile(path="/raid/a.dcm", reason="truncated"),),
        header=dataclasses.replace(
            ok.plan.header, inventory={"complete": False, "note": "3 windows capped"}
        ),
    )
    with Journal.open(ok.journal) as journal:
        c2 = build_context(plan, journal, None, generated_at="now")["completeness"]
    assert not c2["complete"]
    assert c2["blockers"] == ["the source inventory is not provably complete: 3 windows capped"]
    assert c2["quarantine_reasons"] == [{"reason": "truncated", "files": 1}]

    failed = build_sample(tmp_path / "two", kinds=("verified", "unverified"))
    c3 = context_of(failed)["completeness"]
    assert not c3["complete"] and "(1 sent, not verified)" in c3["blockers"][0]


_ROW = st.fixed_dictionaries(
    {
        "status": st.sampled_from(sorted(CATEGORY_OF_STATUS)),
        "action": st.sampled_from(["migrate", "skip", "hold"]),
        "reason": st.sampled_from(["", "source_changed", "not_found", "empty_study"]),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ROW, max_size=40), st.sampled_from([True, False, None]))
def test_account_properties(rows: list[dict[str, Any]], inventory_complete: bool | None) -> None:
    rows = [{**r, "study_uid": f"1.{i}"} for i, r in enumerate(rows)]
    c = account(
        rows,
        plan_study_uids=[r["study_uid"] for r in rows],
        status_labels=STATUS_LABEL,
        reason_texts={},
        quarantine=[],
        inventory={"complete": inventory_complete},
    )
    assert c["unaccounted"] == 0
    assert sum(cat["studies"] for cat in c["categories"]) == len(rows)
    migrate_ok = all(r["status"] == "verified" for r in rows if r["action"] == "migrate")
    none_failed = all(CATEGORY_OF_STATUS[r["status"]] != "failed" for r in rows)
    assert c["complete"] == (migrate_ok and none_failed and inventory_complete is not False)
    assert c["complete"] == (not c["blockers"])


def test_a_study_with_no_outcome_is_unaccounted() -> None:
    rows = [{"study_uid": "1.1", "status": "verified", "action": "migrate", "reason": ""}]
    c = account(
        rows,
        plan_study_uids=["1.1", "1.2"],
        status_labels=STATUS_LABEL,
        reason_texts={},
        quarantine=[],
        inventory={},
    )
    assert c["unaccounted"] == 1 and c["unaccounted_uids"] == ["1.2"] and not c["complete"]


def test_sign_off_record_and_runs(sample: Sample) -> None:
    from pacsmig.plan.approval import Approval
    from pacsmig.plan.codec import fingerprint

    fp = fingerprint(sample.plan)
    approval = Approval(
        fingerprint=fp, by="Dr <b>Signer</b>", at="2026-01-02T10:00:00Z", note="CHG-7"
    )
    ctx = context_of(sample, approval=approval)
    assert ctx["approval"] == {
        "by": "Dr <b>Signer</b>",
        "at": "2026-01-02T10:00:00Z",
        "note": "CHG-7",
        "auto": False,
        "fingerprint": fp,
        "matches": True,
    }
    assert [(r["kind"], r["outcome"], r["approved_by"]) for r in ctx["runs"]] == [
        ("apply", "failed", "Dr Apply"),
        ("verify", "mismatch", ""),
    ]
    html = render_html("report.html.j2", ctx)
    assert "Dr &lt;b&gt;Signer&lt;/b&gt;" in html and "CHG-7" in html and fp in html


# -- charts ------------------------------------------------------------------------------
def test_charts_follow_the_sent_timeline(sample: Sample) -> None:
    # Spread the sent events over known seconds: 4 at 10:00:00, then the rest at 10:09:59.
    with sqlite3.connect(sample.journal) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM events WHERE kind='sent' ORDER BY id")]
        for n, event_id in enumerate(ids):
            at = "2026-01-02T10:00:00.100Z" if n < 4 else "2026-01-02T10:09:59.900Z"
            conn.execute("UPDATE events SET at=? WHERE id=?", (at, event_id))
    ctx = context_of(sample)
    tl = ctx["timeline"]
    assert tl["bucket_seconds"] == 10  # 600 s in at most 60 buckets
    assert sum(b["sent"] for b in tl["buckets"]) == sample.sent == len(ids)
    assert tl["buckets"][0] == {"start": "2026-01-02T10:00:00Z", "seconds": 10, "sent": 4}
    assert tl["buckets"][-1]["sent"] == sample.sent - 4
    progress, throughput, failures, outcomes = ctx["charts"]
    points = [tuple(map(float, p.split(","))) for p in progress["line"].split()]
    plot = progress["plot"]
    top_tick = max(float(t["label"].replace(",", "")) for t in progress["y_ticks"])
    # The last point's height is the total sent on the y scale.
    height = (plot["y"] + plot["h"] - points[-1][1]) / plot["h"] * top_tick
    assert height == pytest.approx(sample.sent, abs=0.1)
    rates = [b["h"] for b in throughput["bars"]]
    assert rates[0] > 0 and rates[-1] > rates[0] and all(h == 0 for h in rates[1:-1])
    assert [b["label"] for b in failures["bars"]] == ["destination_unavailable"]
    assert sum(int(b["value"].replace(",", "")) for b in outcomes["bars"]) == len(sample.kind_of)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40 * 86400), st.integers(1, 500)),
        min_size=1,
        max_size=60,
        unique_by=lambda t: t[0],
    )
)
def test_buckets_keep_every_instance(seconds: list[tuple[int, int]]) -> None:
    import datetime as dt

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        ((base + dt.timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S"), n)
        for s, n in sorted(seconds)
    ]
    bs = charts.buckets(rows)
    assert sum(b.sent for b in bs) == sum(n for _, n in rows)
    assert len(bs) <= charts.MAX_BUCKETS + 1
    assert charts.parse_time(bs[0].start) <= charts.parse_time(rows[0][0] + "Z")
    ticks = charts.nice_ticks(max(b.sent / b.seconds for b in bs))
    assert ticks[-1] >= max(b.sent / b.seconds for b in bs)


# -- the page ----------------------------------------------------------------------------
class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[tuple[str, str]] = []
        self.handlers: list[str] = []
        self.meta: list[dict[str, str | None]] = []
        self._in_script: dict[str, str | None] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        a = dict(attrs)
        self.handlers += [k for k in a if k.startswith("on")]
        self.links += [
            (k, v or "")
            for k, v in attrs
            if k in ("src", "href", "xlink:href", "action", "formaction", "poster", "data")
        ]
        if tag == "meta":
            self.meta.append(a)
        if tag == "script":
            self._in_script = a

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self.scripts.append((self._in_script, data))
        else:
            self.text.append(data)


def parse_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_hostile_values_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, hostile=True)
    ctx = context_of(sample)
    html = render_html("report.html.j2", ctx)
    page = parse_page(html)
    assert page.tags["script"] == 2, "the data block and the page's own script, nothing else"
    assert page.tags["img"] == 0 and not page.handlers
    (data_attrs, blob), (code_attrs, _) = page.scripts
    assert data_attrs == {"type": "application/json", "id": "report-data"}
    assert "</" not in blob and "<" not in blob
    table = json.loads(blob)
    cols = table["columns"]
    names = {r[cols.index("patient_name")] for r in table["rows"]}
    assert HOSTILE in names, "the value survives, as data"
    # Chart labels and reason tables are escaped text.
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert HOSTILE_REASON not in html.replace("\\u003c", "<")[: html.index("report-data")]


def test_the_page_loads_nothing_and_runs_only_its_own_script(sample: Sample) -> None:
    html = render_html("report.html.j2", context_of(sample))
    page = parse_page(html)
    assert all(v.startswith("#") for _, v in page.links), page.links
    outside_data = html[: html.index('<script type="application/json"')]
    assert not re.search(r"https?:|url\(|@import|//[a-z]", outside_data, re.I)
    csp = next(m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy")
    assert csp and "default-src 'none'" in csp and "img-src 'none'" in csp
    script = page.scripts[1][1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp, "the CSP hash must match the inline script"


def test_summary_charts_and_completeness_are_static_html(sample: Sample) -> None:
    ctx = context_of(sample)
    html = render_html("report.html.j2", ctx)
    page = parse_page(html)
    text = " ".join(" ".join(page.text).split())
    assert ctx["completeness"]["blockers"][0] in text
    assert page.tags["svg"] == 4 and page.tags["polyline"] == 1
    assert "failed or refused, with reason" in text and "held for review" in text
    # Without JavaScript the first studies that need attention are listed in <noscript>.
    noscript = html[html.index("<noscript>") : html.index("</noscript>")]
    first = ctx["studies"][0]
    assert first["study_uid"] in noscript and first["status"] != "verified"


def test_page_table_holds_every_study(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, extra_verified=120)
    ctx = context_of(sample)
    html = render_html("report.html.j2", ctx)
    blob = parse_page(html).scripts[0][1]
    table = json.loads(blob)
    cols = table["columns"]
    assert table["page_size"] == 100
    assert [r[cols.index("study_uid")] for r in table["rows"]] == [
        r["study_uid"] for r in ctx["studies"]
    ]
    assert html.count("<tr") < 400, "studies are not rendered as HTML rows"


# -- exports -----------------------------------------------------------------------------
def test_csv_has_one_row_per_study_with_status_and_counts(sample: Sample) -> None:
    ctx = context_of(sample)
    rows = list(csv.DictReader(io.StringIO(render_csv(ctx))))
    assert {r["study_uid"]: (r["status"], r["reason"]) for r in rows} == {
        u: sample.expected(u) for u in sample.kind_of
    }
    by_uid = {r["study_uid"]: r for r in rows}
    missing = by_uid[sample.uid_of["missing"]]
    assert (missing["missing_count"], missing["verification_status"]) == ("1", "missing")
    assert by_uid[sample.uid_of["images"]]["images_different"] == "1"
    assert "PatientName: 'DOE^" in by_uid[sample.uid_of["attributes"]]["attribute_diffs"]
    assert by_uid[sample.uid_of["not_applied"]]["found_instances"] == ""


def test_csv_neutralises_formulas(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, kinds=("verified",))
    action = dataclasses.replace(
        sample.plan.actions[0], patient_id='=HYPERLINK("http://x")', description="+1+1"
    )
    sample.plan = dataclasses.replace(sample.plan, actions=(action,))
    text = render_csv(context_of(sample))
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["patient_id"] == '\'=HYPERLINK("http://x")' and row["description"] == "'+1+1"


def test_json_export_has_the_summary_and_every_study(sample: Sample) -> None:
    ctx = context_of(sample)
    doc = json.loads(render_json(ctx))
    assert doc["format"] == "pacsmig-report" and "charts" not in doc
    assert doc["completeness"]["complete"] is False
    assert {f["key"] for f in doc["figures"]} >= {"planned", "sent", "verified", "failed"}
    assert {s["study_uid"]: s["status"] for s in doc["studies"]} == {
        u: sample.expected(u)[0] for u in sample.kind_of
    }
    assert sum(b["sent"] for b in doc["timeline"]["buckets"]) == sample.sent


def test_api_report_writes_each_format(tmp_path: Path) -> None:
    from pacsmig import api
    from pacsmig.errors import InputError
    from pacsmig.plan.codec import write_plan

    sample = build_sample(tmp_path / "j", kinds=("verified", "missing"))
    plan_path = tmp_path / "p.json"
    write_plan(sample.plan, plan_path)
    sample.journal.rename(api.journal_path(plan_path, sample.plan))
    html = api.report(plan_path, tmp_path / "r.html").read_text()
    assert "Incomplete:" in html and "1 of 2 studies to migrate are not verified" in html
    assert (
        len(
            list(
                csv.DictReader(
                    io.StringIO((api.report(plan_path, tmp_path / "r.csv", fmt="csv")).read_text())
                )
            )
        )
        == 2
    )
    assert json.loads(api.report(plan_path, tmp_path / "r.json", fmt="json").read_text())["studies"]
    with pytest.raises(InputError, match="unknown format 'pdf'"):
        api.report(plan_path, tmp_path / "r.pdf", fmt="pdf")


def test_every_status_has_a_label_and_an_outcome() -> None:
    assert set(STATUS_LABEL) == set(STATUS_ORDER) == set(CATEGORY_OF_STATUS)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_any_text_stays_data(name: str, reason: str) -> None:
    import tempfile

    action = StudyAction(
        study_uid="1.2.3",
        action="hold",
        reason=reason or "x",
        patient_name=name,
        description=name,
        series=(ExpectedSeries(series_uid="1.2.3.4", description=name, instances=1),),
    )
    plan = Plan(header=header_for(SPEC, "2026-01-01T00:00:00Z"), actions=(action,))
    with tempfile.TemporaryDirectory() as tmp, Journal.open(Path(tmp) / "j.sqlite") as journal:
        html = render_html("report.html.j2", build_context(plan, journal, None, generated_at="t"))
    page = parse_page(html)
    assert page.tags["script"] == 2 and not page.handlers
    table = json.loads(page.scripts[0][1])
    row = table["rows"][0]
    assert row[table["columns"].index("patient_name")] == name
    assert table["reasons"].get(reason or "x") is not None
