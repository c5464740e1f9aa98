"""The review page in a real browser: headless Chromium renders it to a screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsmig.report.review import render_review, review_context
from tests.browser import CHROMIUM, chromium
from tests.unit.test_review import FP, sample_plan


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_review_page_screenshot(tmp_path: Path) -> None:
    ctx = review_context(
        sample_plan(),
        fingerprint=FP,
        generated_at="2026-01-03T00:00:00Z",
        approval={"by": "Dr Reviewer", "at": "2026-01-03T10:00:00Z", "fingerprint": FP},
    )
    page = tmp_path / "review.html"
    page.write_text(render_review(ctx), encoding="utf-8")
    shot = tmp_path / "review.png"
    proc = chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1300,1800", page.resolve().as_uri()
    )
    assert shot.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, f"screenshot is only {len(data)} bytes: a blank page?"
