"""Headless Chromium from Debian's package, started as this workplace needs (no network).

Two ways in: `chromium()` runs the binary once (--screenshot, --dump-dom); `browser_page()`
drives it with playwright (its own browser builds are never downloaded: the system Chromium
is launched by path) and records what a test must check: console errors, uncaught
exceptions, dialogs (an alert() that ran) and every URL the page asked for.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Chromium with a fresh profile under tmp; args such as --screenshot or --dump-dom."""
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    profile.mkdir()
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class PageLog:
    """What the page did besides rendering."""

    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextmanager
def browser_page(
    width: int = 1300, height: int = 1000, *, javascript: bool = True
) -> Iterator[tuple[Any, PageLog]]:
    """A playwright Page in headless system Chromium, and the log of what it did."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed")
    log = PageLog()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(
                viewport={"width": width, "height": height}, java_script_enabled=javascript
            )
            page.set_default_timeout(20_000)
            page.on(
                "console",
                lambda m: log.errors.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: log.errors.append(f"exception: {e}"))
            page.on("request", lambda r: log.requests.append(r.url))

            def on_dialog(dialog: Any) -> None:
                log.dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            yield page, log
        finally:
            browser.close()
