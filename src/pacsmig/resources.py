"""Locate the JSON schemas and HTML templates, installed or in a checkout."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any


def _resource_dir(name: str) -> Path:
    # An installed wheel carries them inside the package (force-include in pyproject);
    # a source checkout or an editable install finds them at the repository root.
    packaged = Path(__file__).resolve().parent / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"pacsmig resource folder {name!r} is missing from the installation")


def schemas_dir() -> Path:
    return _resource_dir("schemas")


def templates_dir() -> Path:
    return _resource_dir("templates")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    with (schemas_dir() / name).open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema
