"""Markers by folder: tests/unit -> unit, tests/property -> property, and so on."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

_TIERS = ("unit", "property", "network", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (rather than hang) what runs longer than `seconds` (main thread, POSIX)."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test exceeded {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
