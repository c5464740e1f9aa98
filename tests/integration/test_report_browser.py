"""The report in a real browser: headless Chromium renders it, and its filters work."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from pacsmig.testing.corpus import generate_corpus
from tests.browser import CHROMIUM, chromium
from tests.integration.conftest import Site, run_cli


class _Rows(HTMLParser):
    """Study rows of the rendered DOM: (status, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "study" in (a.get("class") or "").split():
            self.rows.append(
                (a.get("data-status") or "", "display: none" in (a.get("style") or ""))
            )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_report_renders_and_filters_inchromium(site: Site) -> None:
    for f in generate_corpus(site.work / "gen", studies=4, per_series=2):
        site.source.upload(f)
    plan = site.work / "plan.json"
    run_cli("plan", site.spec(), "-o", plan, check=0)
    run_cli("apply", plan, "--auto-approve", check=0)
    victim = sorted(site.dest.sop_instance_uids())[0]
    site.dest.delete_instance(victim)
    run_cli("verify", plan, check=1)
    report = site.work / "report.html"
    run_cli("report", plan, "-o", report, check=0)

    shot = site.work / "report.png"
    proc = chromium(site.work, f"--screenshot={shot}", "--window-size=1300,1600", report.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-1000:]

    dom = chromium(site.work, "--dump-dom", report.as_uri() + "#status=missing").stdout
    rows = _Rows()
    rows.feed(dom)
    assert len(rows.rows) == 4
    shown = [status for status, hidden in rows.rows if not hidden]
    assert shown == ["missing"], rows.rows
    assert "1 shown" in dom and victim in dom

    unfiltered = _Rows()
    unfiltered.feed(chromium(site.work, "--dump-dom", report.as_uri()).stdout)
    assert [hidden for _, hidden in unfiltered.rows] == [False] * 4
