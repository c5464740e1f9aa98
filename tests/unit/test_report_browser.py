"""The report in headless Chromium (playwright, Debian's browser): it renders, it logs no
error, loads nothing, runs no injected script, and its filters, pages and drill-down work."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pacsmig.report.render import render_html
from tests.browser import PageLog, browser_page
from tests.unit.test_report import HOSTILE, Sample, build_sample, context_of

EXTRA = 240  # with the 17 kinds: 257 studies, three pages of 100


def _shown(page: Any) -> list[tuple[str, str]]:
    return page.eval_on_selector_all(
        "#studies tbody tr.study", "els => els.map(e => [e.dataset.status, e.dataset.uid])"
    )


def _count(page: Any) -> str:
    return str(page.inner_text("#f-count"))


def _write(tmp_path: Path, sample: Sample) -> Path:
    out = tmp_path / "report.html"
    out.write_text(render_html("report.html.j2", context_of(sample)), encoding="utf-8")
    return out


def _clean(log: PageLog, url: str) -> None:
    assert not log.errors, log.errors
    assert not log.dialogs, f"a script ran: {log.dialogs}"
    assert {u.split("#")[0] for u in log.requests} == {url.split("#")[0]}, log.requests


def test_report_in_chromium(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, extra_verified=EXTRA, hostile=True)
    total = len(sample.kind_of)
    url = _write(tmp_path, sample).as_uri()
    statuses = Counter(sample.expected(u)[0] for u in sample.kind_of)
    with browser_page() as (page, log):
        page.goto(url)
        page.wait_for_selector("#studies tbody tr.study")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000

        # Pages of 100.
        assert _count(page) == f"{total} shown of {total}"
        assert len(_shown(page)) == 100
        assert page.inner_text("#p-info") == "page 1 of 3"
        page.click("#p-last")
        assert len(_shown(page)) == total - 200 and "page=3" in page.url

        # Status filter: only those rows, on one page.
        page.select_option("#f-status", "missing")
        shown = _shown(page)
        assert {s for s, _ in shown} == {"missing"} and len(shown) == statuses["missing"]
        assert _count(page) == f"{statuses['missing']} shown of {total}"
        assert "#status=missing" in page.url
        page.select_option("#f-reason", "not_found")
        assert [u for _, u in _shown(page)] == [sample.uid_of["not_found"]]
        page.select_option("#f-reason", "")
        page.select_option("#f-status", "")

        # Route and modality filters.
        page.select_option("#f-route", "direct")
        direct = [a.study_uid for a in sample.plan.actions if a.route == "direct"]
        assert {u for _, u in _shown(page)} <= set(direct) and len(direct) > 100
        assert _count(page) == f"{len(direct)} shown of {total}"
        page.select_option("#f-route", "")
        page.select_option("#f-modality", "MR")
        mr = sum(1 for a in sample.plan.actions if "MR" in a.modalities)
        assert _count(page) == f"{mr} shown of {total}"
        page.select_option("#f-modality", "")

        # Free text finds one study by accession, by study UID, and by patient ID.
        last = sample.plan.actions[-1].study_uid
        for uid, query in (
            (sample.uid_of["images"], sample.plan.study(sample.uid_of["images"]).accession),  # type: ignore[union-attr]
            (last, last),
            (sample.uid_of["verified"], "pid0000"),
        ):
            page.fill("#f-text", query)
            page.wait_for_function(
                "uid => document.getElementById('f-count').textContent.startsWith('1 shown')"
                " && document.querySelector('#studies tbody tr.study').dataset.uid === uid",
                arg=uid,
            )
            assert [u for _, u in _shown(page)] == [uid]
        page.fill("#f-text", "")
        page.wait_for_function(
            "n => document.getElementById('f-count').textContent.startsWith(n + ' shown')",
            arg=str(total),
        )

        # Drill-down: the attribute diff, before and after, and a hostile value as text.
        page.select_option("#f-status", "attributes_differ")
        page.click("#studies tbody tr.study")
        diff = page.inner_text("tr.drill table.attr-diff")
        assert "PatientName" in diff and "DOE^JOHN" in diff
        assert "AccessionNumber" in diff and "OLD1" in diff
        assert HOSTILE in page.inner_text("#studies tbody tr.study td:nth-child(2)")
        assert "open=" in page.url
        page.click("#studies tbody tr.study")  # closes it
        assert page.query_selector("tr.drill") is None

        # Image comparison and commitment, element by element.
        page.select_option("#f-status", "images_differ")
        page.click("#studies tbody tr.study")
        images = page.inner_text("tr.drill table.image-diff")
        assert "(7FE0,0010)" in images and "PixelData" in images and HOSTILE in images
        page.select_option("#f-status", "failed")
        page.click("#studies tbody tr.study")
        assert "destination_unavailable" not in page.inner_text("tr.drill")  # hostile reason
        assert "onerror" in page.inner_text("tr.drill table.failures")
        _clean(log, url)


def test_deep_links_open_the_report_filtered(tmp_path: Path) -> None:
    sample = build_sample(tmp_path, extra_verified=5)
    url = _write(tmp_path, sample).as_uri()
    target = sample.uid_of["missing"]
    with browser_page() as (page, log):
        page.goto(url + "#status=refused")
        page.wait_for_selector("#studies tbody tr.study")
        assert [s for s, _ in _shown(page)] == ["refused"]
        assert page.eval_on_selector("#f-status", "e => e.value") == "refused"
        page.goto(url + f"#open={target}")
        page.wait_for_selector("tr.drill")
        assert target in page.inner_text("tr.drill")
        assert f"{target}.1.0" in page.inner_text("tr.drill"), "the missing instance is named"
        _clean(log, url)


def test_without_javascript_the_summary_and_completeness_still_show(tmp_path: Path) -> None:
    sample = build_sample(tmp_path)
    url = _write(tmp_path, sample).as_uri()
    with browser_page(javascript=False) as (page, log):
        page.goto(url)
        assert "Incomplete:" in page.inner_text("#verdict")
        assert page.is_visible("#chart-progress svg") and page.is_visible("#accounting")
        assert page.is_visible("#studies-static") and not page.is_visible("#filters")
        assert sample.uid_of["missing"] in page.inner_text("#studies-static")
        _clean(log, url)
