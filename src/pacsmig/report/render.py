"""Render report contexts with Jinja2: autoescaped, undefined names are errors."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from typing import Any

import jinja2

from pacsmig.resources import templates_dir

REPORT_TEMPLATE = "report.html.j2"
REPORT_SCRIPT = "report.js"
JSON_FORMAT_VERSION = 1


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,  # every DICOM value is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # |tojson escapes <, >, & and ' as \u00XX, so data cannot close its <script> element.
    env.policies["json.dumps_kwargs"] = {
        "sort_keys": False,
        "separators": (",", ":"),
        "ensure_ascii": False,
    }
    return env


def render_html(template: str, context: dict[str, Any]) -> str:
    env = environment()
    extras: dict[str, Any] = {}
    if template == REPORT_TEMPLATE:
        extras = _report_extras(env, context)
    return env.get_template(template).render(**context, **extras)


def _report_extras(env: jinja2.Environment, context: dict[str, Any]) -> dict[str, Any]:
    from pacsmig.report.context import REASON_TEXT, STATUS_LABEL
    from pacsmig.report.table import client_table

    script = env.get_template(REPORT_SCRIPT).render()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # The page may run exactly its own script and load nothing at all: even a value that got
    # past escaping could neither execute nor reach the network.
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    return {
        "csp": csp,
        "table": client_table(
            context["studies"], status_labels=STATUS_LABEL, reason_texts=REASON_TEXT
        ),
        "script_name": REPORT_SCRIPT,
        "static_limit": 200,
    }


def render_json(context: dict[str, Any]) -> str:
    # Chart geometry is presentation; the timeline buckets carry the same facts.
    doc = {k: v for k, v in context.items() if k != "charts"}
    doc = {"format": "pacsmig-report", "format_version": JSON_FORMAT_VERSION, **doc}
    # Compact: a 100,000-study report is data for other tools, not for reading in an editor.
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


CSV_FIELDS = (
    "study_uid",
    "status",
    "reason",
    "action",
    "plan_reason",
    "patient_id",
    "patient_name",
    "study_date",
    "accession",
    "modalities",
    "description",
    "route",
    "transcode",
    "priority",
    "expected_series",
    "expected_instances",
    "sent",
    "present",
    "failed",
    "found_instances",
    "missing_count",
    "extra_instances",
    "verification_status",
    "verified_at",
    "attribute_diffs",
    "images_sampled",
    "images_equal",
    "images_different",
    "commitment_requested",
    "commitment_committed",
    "commitment_failed",
    "failure_reasons",
)


def render_csv(context: dict[str, Any]) -> str:
    """One row per study: status, reason, verification result and counts."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_FIELDS))
    writer.writeheader()
    for row in context["studies"]:
        writer.writerow({k: _cell(v) for k, v in csv_row(row).items()})
    return out.getvalue()


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    v = row["verification"] or {}
    images = row["images"] or {}
    commitment = row["commitment"] or {}
    reasons = sorted({f["reason"] for f in row["failures"]})
    values = {k: row[k] for k in CSV_FIELDS if k in row}
    values.update(
        {
            "modalities": " ".join(row["modalities"]),
            "found_instances": "" if row["found_instances"] is None else row["found_instances"],
            "verification_status": v.get("status", ""),
            "verified_at": v.get("at", ""),
            "attribute_diffs": "; ".join(
                f"{d['keyword']}: {d['expected']!r} -> {d['found']!r}"
                for d in row["attribute_diffs"]
            ),
            "images_sampled": images.get("sampled", ""),
            "images_equal": images.get("equal", ""),
            "images_different": images.get("different_total", ""),
            "commitment_requested": commitment.get("requested", ""),
            "commitment_committed": commitment.get("committed", ""),
            "commitment_failed": commitment.get("failed_total", ""),
            "failure_reasons": " ".join(reasons),
        }
    )
    return values


def _cell(value: Any) -> Any:
    # A DICOM value such as '=HYPERLINK(...)' would run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
