"""Build the report context: plain dicts and lists, no pacsmig objects, no HTML."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pacsmig import __version__
from pacsmig.journal.store import FAILED, MISSING, PRESENT, SENT, Journal
from pacsmig.plan.approval import Approval
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import REASONS, Plan, summarize

# Study statuses in the order a reader should look at them.
STATUS_ORDER = (
    "missing",
    "attributes",
    "failed",
    "refused",
    "held",
    "not_applied",
    "unverified",
    "verified",
    "skipped",
)
STATUS_LABEL = {
    "verified": "verified",
    "missing": "missing at destination",
    "attributes": "attributes differ from plan",
    "failed": "failed",
    "refused": "refused",
    "held": "held for review",
    "not_applied": "not applied yet",
    "unverified": "sent, not verified",
    "skipped": "skipped",
}


def build_context(
    plan: Plan, journal: Journal, approval: Approval | None, *, generated_at: str
) -> dict[str, Any]:
    summary = summarize(plan)
    verification = journal.latest_verification()
    verify_run, checks = verification if verification else (None, {})
    studies_state = journal.studies()
    instances = journal.instances()
    by_study: dict[str, list[Any]] = {}
    for row in instances:
        by_study.setdefault(row.study_uid, []).append(row)

    rows: list[dict[str, Any]] = []
    status_counts: Counter[str] = Counter()
    failure_reasons: Counter[str] = Counter()
    totals = Counter[str]()
    for action in plan.actions:
        inst = by_study.get(action.study_uid, [])
        states = Counter(r.state for r in inst)
        check = checks.get(action.study_uid)
        jstate = studies_state.get(action.study_uid)
        status = _status(action.action, action.reason, jstate, check, states)
        status_counts[status] += 1
        failures = [
            {"sop_uid": r.sop_uid, "reason": r.reason, "code": _hex(r.code), "detail": r.detail}
            for r in inst
            if r.state == FAILED
        ]
        for f in failures:
            failure_reasons[f["reason"]] += 1
        totals["sent"] += states.get(SENT, 0)
        totals["present"] += states.get(PRESENT, 0)
        totals["failed"] += states.get(FAILED, 0)
        series: list[dict[str, Any]] = []
        detail = check["detail"] if check else None
        found_by_series = {s["series_uid"]: s for s in detail["series"]} if detail else {}
        for s in action.series:
            got = found_by_series.get(s.series_uid)
            series.append(
                {
                    "series_uid": s.series_uid,
                    "modality": s.modality,
                    "number": s.number,
                    "description": s.description,
                    "expected": s.instances,
                    "found": got["found"] if got else None,
                    "missing": list(got["missing"]) if got else [],
                }
            )
        rows.append(
            {
                "study_uid": action.study_uid,
                "action": action.action,
                "reason": action.reason,
                "reason_text": REASONS.get(action.reason, action.reason.replace("_", " ")),
                "detail": action.detail,
                "status": status,
                "status_label": STATUS_LABEL[status],
                "patient_id": action.patient_id,
                "patient_name": action.patient_name,
                "study_date": action.study_date,
                "accession": action.accession,
                "description": action.description,
                "modalities": " ".join(action.modalities),
                "expected_instances": action.instance_count,
                "expected_series": action.series_count,
                "found_instances": check["found"] if check else None,
                "series": series,
                "missing_count": sum(len(s["missing"]) for s in series),
                "extra_instances": detail["extra_instances"] if detail else 0,
                "attribute_diffs": list(detail.get("attributes", [])) if detail else [],
                "match": _match(action.match),
                "failures": failures,
                "refusal": jstate[2] if jstate and jstate[0] == "refused" else "",
                "corrections": [
                    {"keyword": c.keyword, "before": c.before, "after": c.after}
                    for c in action.corrections
                ],
            }
        )
    rows.sort(key=lambda r: (STATUS_ORDER.index(r["status"]), r["study_date"], r["study_uid"]))
    accounted = sum(status_counts.values()) == len(plan.actions)
    complete = verify_run is not None and all(r["status"] in ("verified", "skipped") for r in rows)
    return {
        "title": f"pacsmig report: {plan.header.name}",
        "generated_at": generated_at,
        "pacsmig_version": __version__,
        "plan": {
            "name": plan.header.name,
            "fingerprint": fingerprint(plan),
            "created_at": plan.header.created_at,
            "source": _endpoint(plan.header.source),
            "destination": _endpoint(plan.header.destination),
            "studies": summary.studies,
            "instances": summary.instances,
            "reasons": [
                {
                    "action": a,
                    "reason": r,
                    "text": REASONS.get(r, r.replace("_", " ")),
                    "studies": n,
                    "instances": summary.reason_instances.get((a, r), 0),
                }
                for (a, r), n in summary.reasons.items()
            ],
        },
        "approval": (
            {
                "by": approval.by,
                "at": approval.at,
                "note": approval.note,
                "auto": approval.auto,
                "matches": approval.fingerprint == fingerprint(plan),
            }
            if approval
            else None
        ),
        "runs": [
            {
                "run_id": r.run_id,
                "kind": r.kind,
                "started_at": r.started_at,
                "finished_at": r.finished_at or "",
                "outcome": r.outcome or "running or killed",
            }
            for r in journal.runs()
        ],
        "verification": (
            {"run_id": verify_run.run_id, "at": verify_run.finished_at or verify_run.started_at}
            if verify_run
            else None
        ),
        "totals": {
            "studies": len(plan.actions),
            "instances_planned": sum(
                a.instance_count for a in plan.actions if a.action == "migrate"
            ),
            "sent": totals["sent"],
            "present": totals["present"],
            "failed": totals["failed"],
            "missing": sum(r["missing_count"] for r in rows),
            "attribute_studies": sum(1 for r in rows if r["attribute_diffs"]),
        },
        "status_counts": [
            {"status": s, "label": STATUS_LABEL[s], "studies": status_counts.get(s, 0)}
            for s in STATUS_ORDER
            if status_counts.get(s, 0)
        ],
        "failure_reasons": [
            {"reason": k, "instances": v} for k, v in failure_reasons.most_common()
        ],
        "complete": complete,
        "quarantine": [
            {"path": q.path, "reason": q.reason, "detail": q.detail} for q in plan.quarantine
        ],
        "duplicates": [
            {"sop_uid": d.sop_uid, "kept": d.kept, "other": d.other} for d in plan.duplicates
        ],
        "inventory": dict(plan.header.inventory),
        "accounted": accounted,
        "studies": rows,
    }


def _status(
    action: str,
    reason: str,
    jstate: tuple[str, str, str, str] | None,
    check: dict[str, Any] | None,
    states: Counter[str],
) -> str:
    if action == "hold":
        return "held"
    if action == "skip" and reason != "already_complete":
        return "skipped"
    if check is not None:
        if check["status"] == "attributes_differ":
            return "attributes"
        if check["status"] != "verified":
            return "missing"
        return "verified"
    if jstate and jstate[0] == "refused":
        return "refused"
    if states.get(FAILED) or states.get(MISSING):
        return "failed"
    if action == "skip":
        return "unverified"
    if jstate is None:
        return "not_applied"
    return "unverified"


def _match(match: dict[str, Any] | None) -> dict[str, Any] | None:
    if not match:
        return None
    return {
        "order_id": match.get("order_id") or "",
        "rule": match.get("rule") or "",
        "score": "" if match.get("score") is None else f"{match['score']:.2f}",
        "hold_reason": match.get("hold_reason") or "",
        "candidates": list(match.get("candidates") or []),
    }


def _endpoint(e: Any) -> dict[str, Any]:
    return {"ae_title": e.ae_title, "host": e.host, "port": e.port, "retrieve": e.retrieve}


def _hex(code: int | None) -> str:
    return f"0x{code:04X}" if code is not None else ""
