"""Markers by folder: tests/unit -> unit, tests/property -> property, and so on."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = ("unit", "property", "network", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
