"""Render report contexts with Jinja2: autoescaped, undefined names are errors."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import jinja2

from pacsmig.resources import templates_dir


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,  # every DICOM value is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(**context)


def render_json(context: dict[str, Any]) -> str:
    return json.dumps(context, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def render_csv(context: dict[str, Any]) -> str:
    out = io.StringIO()
    fields = [
        "study_uid",
        "status",
        "action",
        "reason",
        "patient_id",
        "study_date",
        "accession",
        "modalities",
        "expected_instances",
        "found_instances",
        "missing_count",
        "extra_instances",
    ]
    writer = csv.DictWriter(out, fieldnames=[*fields, "failed_instances"], extrasaction="ignore")
    writer.writeheader()
    for row in context["studies"]:
        values = {k: _cell(row[k]) for k in fields}
        writer.writerow({**values, "failed_instances": len(row["failures"])})
    return out.getvalue()


def _cell(value: Any) -> Any:
    # A DICOM value such as '=HYPERLINK(...)' would run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
