"""The studies table as data for the page's script: one compact JSON document.

A report of 100,000 studies cannot be 100,000 rows of HTML (the browser would lay out every
one); the page embeds this document once and draws 100 rows at a time. Rows are arrays in
COLUMNS order; a row's drill-down facts sit in its last cell, empty values left out. Labels
and reason texts travel once, keyed by code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    "study_uid",
    "status",
    "reason",
    "patient_id",
    "patient_name",
    "study_date",
    "accession",
    "modalities",
    "description",
    "route",
    "expected_instances",
    "found_instances",
    "action",
    "plan_reason",
    "details",
)


def client_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    status_labels: Mapping[str, str],
    reason_texts: Mapping[str, str],
    page_size: int = 100,
) -> dict[str, Any]:
    reasons = {r[k] for r in rows for k in ("reason", "plan_reason") if r[k]}
    return {
        "columns": list(COLUMNS),
        "page_size": page_size,
        "labels": dict(status_labels),
        "reasons": {k: reason_texts.get(k, k.replace("_", " ")) for k in sorted(reasons)},
        "rows": [_row(r) for r in rows],
    }


def _row(r: Mapping[str, Any]) -> list[Any]:
    return [
        r["study_uid"],
        r["status"],
        r["reason"],
        r["patient_id"],
        r["patient_name"],
        r["study_date"],
        r["accession"],
        " ".join(r["modalities"]),
        r["description"],
        r["route"],
        r["expected_instances"],
        r["found_instances"],
        r["action"],
        r["plan_reason"],
        _details(r),
    ]


def _details(r: Mapping[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "series": [
            [
                s["number"],
                s["series_uid"],
                s["modality"],
                s["description"],
                s["expected"],
                s["found"],
                s["missing_total"],
                s["missing"],
            ]
            for s in r["series"]
        ]
    }
    optional: dict[str, Any] = {
        "sent": r["sent"],
        "present": r["present"],
        "failed": r["failed"],
        "extra": r["extra_instances"],
        "attrs": [[a["keyword"], a["expected"], a["found"]] for a in r["attribute_diffs"]],
        "corr": [[c["keyword"], c["before"], c["after"]] for c in r["corrections"]],
        "images": r["images"],
        "commit": r["commitment"],
        "fail": [[f["sop_uid"], f["reason"], f["code"], f["detail"]] for f in r["failures"]],
        "inst_missing": r["instances_check"]["missing"],
        "inst_extra": r["instances_check"]["extra"],
        "levels": r["levels"],
        "plan_detail": r["plan_detail"],
        "transcode": r["transcode"],
        "priority": r["priority"],
    }
    v = r["verification"]
    if v:
        optional["verified"] = [v["status"], v["at"], v["run_id"], v["note"]]
    j = r["journal_state"]
    if j:
        optional["journal"] = [j["state"], j["reason"], j["detail"], j["at"]]
    m = r["match"]
    if m:
        optional["match"] = [m["order_id"], m["rule"], m["score"], m["hold_reason"]]
    d.update({k: v for k, v in optional.items() if v})
    return d
