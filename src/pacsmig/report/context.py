"""Build the report context: plain dicts and lists, no pacsmig objects, no HTML.

The journal of a large migration holds millions of instance rows, so nothing here loads them
all: per-study counts and the timeline come from SQL aggregates, and only failed instances are
read one by one (at most LIST_LIMIT named per study; the journal keeps every one).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pacsmig import __version__
from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal
from pacsmig.plan.approval import Approval
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import REASONS, Plan, StudyAction, summarize
from pacsmig.report import charts
from pacsmig.report.completeness import account

# Instances named per study and list (missing, failed, image differences...).
LIST_LIMIT = 500

# Study statuses in the order a reader should look at them.
STATUS_ORDER = (
    "missing",
    "attributes_differ",
    "images_differ",
    "not_committed",
    "verify_error",
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
    "attributes_differ": "attributes differ from plan",
    "images_differ": "images differ from source",
    "not_committed": "not committed by destination",
    "verify_error": "verification error",
    "failed": "failed",
    "refused": "refused",
    "held": "held for review",
    "not_applied": "not applied yet",
    "unverified": "sent, not verified",
    "skipped": "skipped",
}
PROBLEM_STATUSES = (
    "missing",
    "attributes_differ",
    "images_differ",
    "not_committed",
    "verify_error",
)

# Reasons the report itself gives (a study's status); plan reasons come from plan.model.
REASON_TEXT: dict[str, str] = {
    **REASONS,
    "not_found": "the destination does not have the study",
    "instances_missing": "instances are missing at the destination",
    "attributes_differ": "key attributes at the destination differ from the plan",
    "images_differ": "retrieved images differ from the source copy",
    "commitment_failed": "the destination did not commit some instances",
    "commitment_timeout": "the destination did not answer the storage commitment in time",
    "verify_error": "verification could not complete",
    "source_changed": "the study changed at the source after planning",
    "instances_failed": "instances failed to transfer",
    "interrupted": "apply stopped in the middle of this study",
    "sent_after_verification": "sent again after the last verification",
    "not_retrieved": "the source did not deliver the instance",
    "destination_unavailable": "the destination could not be reached or kept failing",
    "unsupported_by_destination": "the destination accepts no transfer syntax for it",
    "already_at_destination": "found at the destination by apply",
}


def reason_text(code: str) -> str:
    return REASON_TEXT.get(code, code.replace("_", " ")) if code else ""


def build_context(
    plan: Plan, journal: Journal, approval: Approval | None, *, generated_at: str
) -> dict[str, Any]:
    fp = fingerprint(plan)
    summary = summarize(plan)
    checks = _verifications(journal)
    jstudies = journal.studies()
    counts: dict[str, dict[str, int]] = {}
    for (study_uid, state), n in journal.instance_state_counts().items():
        counts.setdefault(study_uid, {})[state] = n
    failed_rows, failed_totals = _failed_instances(journal)

    rows = [
        _study_row(
            action,
            jstudies.get(action.study_uid),
            checks.get(action.study_uid),
            counts.get(action.study_uid, {}),
            failed_rows.get(action.study_uid, []),
        )
        for action in plan.actions
    ]
    rows.sort(key=lambda r: (_STATUS_RANK[r["status"]], r["study_date"], r["study_uid"]))

    per_second = _sent_per_second(journal)
    bs = charts.buckets(per_second)
    status_counts = Counter(r["status"] for r in rows)
    planned = {a.study_uid for a in plan.actions}
    quarantine = [{"path": q.path, "reason": q.reason, "detail": q.detail} for q in plan.quarantine]
    completeness = account(
        rows,
        plan_study_uids=[a.study_uid for a in plan.actions],
        status_labels=STATUS_LABEL,
        reason_texts=REASON_TEXT,
        quarantine=quarantine,
        inventory=plan.header.inventory,
        foreign_studies=sum(1 for uid in jstudies if uid not in planned),
    )
    figures = _figures(plan, rows, failed_totals)
    verify_runs = [r for r in journal.runs("verify") if r.finished_at]
    latest_check = max((c["at"] for c in checks.values() if c["at"]), default="")
    return {
        "title": f"pacsmig report: {plan.header.name}",
        "generated_at": generated_at,
        "pacsmig_version": __version__,
        "plan": {
            "name": plan.header.name,
            "fingerprint": fp,
            "created_at": plan.header.created_at,
            "source": _endpoint(plan.header.source),
            "destination": _endpoint(plan.header.destination),
            "studies": summary.studies,
            "instances": summary.instances,
            "reasons": [
                {
                    "action": a,
                    "reason": r,
                    "text": reason_text(r),
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
                "fingerprint": approval.fingerprint,
                "matches": approval.fingerprint == fp,
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
                "approved_by": str((r.approval or {}).get("by", "")),
                "same_plan": r.plan_fingerprint == fp,
            }
            for r in journal.runs()
        ],
        "verification": (
            {
                "studies": len(checks),
                "at": latest_check,
                "run_id": verify_runs[-1].run_id if verify_runs else None,
            }
            if checks
            else None
        ),
        "figures": figures,
        "status_counts": [
            {"status": s, "label": STATUS_LABEL[s], "studies": status_counts[s]}
            for s in STATUS_ORDER
            if status_counts.get(s)
        ],
        "failure_reasons": [
            {
                "reason": reason,
                "text": reason_text(reason),
                "instances": n,
                "studies": studies,
            }
            for reason, (n, studies) in sorted(failed_totals.items(), key=lambda i: -i[1][0])
        ],
        "timeline": {
            "bucket_seconds": bs[0].seconds if bs else 0,
            "buckets": charts.bucket_dicts(bs),
        },
        "charts": [
            charts.progress_chart(bs),
            charts.throughput_chart(bs),
            charts.category_chart(
                "chart-failures",
                "Failed instances by reason",
                [(f, n) for f, (n, _) in failed_totals.items()],
                "failed instances",
            ),
            charts.category_chart(
                "chart-outcomes",
                "Studies by outcome",
                [(STATUS_LABEL[s], n) for s, n in status_counts.items()],
                "studies",
            ),
        ],
        "completeness": completeness,
        "complete": completeness["complete"],
        "filters": _filter_options(rows),
        "quarantine": quarantine,
        "duplicates": [
            {"sop_uid": d.sop_uid, "kept": d.kept, "other": d.other} for d in plan.duplicates
        ],
        "inventory": dict(plan.header.inventory),
        "list_limit": LIST_LIMIT,
        "studies": rows,
    }


_STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}


# -- one study ---------------------------------------------------------------------------
def _study_row(
    action: StudyAction,
    jstate: tuple[str, str, str, str] | None,
    check: dict[str, Any] | None,
    counts: Mapping[str, int],
    failures: list[dict[str, Any]],
) -> dict[str, Any]:
    detail: dict[str, Any] = check["detail"] if check else {}
    status, reason = _status(action, jstate, check, counts, failures)
    found_by_series = {
        str(s.get("series_uid")): s for s in _dicts(detail.get("series")) if s.get("series_uid")
    }
    series = []
    for s in action.series:
        got = found_by_series.get(s.series_uid)
        missing = [str(u) for u in (got or {}).get("missing") or ()]
        series.append(
            {
                "series_uid": s.series_uid,
                "modality": s.modality,
                "number": s.number,
                "description": s.description,
                "expected": s.instances,
                "found": _int_or_none((got or {}).get("found")),
                "missing": missing[:LIST_LIMIT],
                "missing_total": len(missing),
            }
        )
    inst = detail.get("instances")
    if not isinstance(inst, dict):
        inst = {}
    return {
        "study_uid": action.study_uid,
        "status": status,
        "status_label": STATUS_LABEL[status],
        "reason": reason,
        "reason_text": reason_text(reason),
        "action": action.action,
        "plan_reason": action.reason,
        "plan_reason_text": reason_text(action.reason),
        "plan_detail": action.detail,
        "patient_id": action.patient_id,
        "patient_name": action.patient_name,
        "study_date": action.study_date,
        "accession": action.accession,
        "description": action.description,
        "modalities": list(action.modalities),
        "route": action.route,
        "transcode": action.transcode,
        "priority": action.priority,
        "expected_series": action.series_count,
        "expected_instances": action.instance_count,
        "sent": counts.get(SENT, 0),
        "present": counts.get(PRESENT, 0),
        "failed": counts.get(FAILED, 0),
        "found_instances": _int_or_none(check["found"]) if check else None,
        "missing_count": sum(s["missing_total"] for s in series),
        "extra_instances": _int_or_none(detail.get("extra_instances")) or 0,
        "series": series,
        "attribute_diffs": [
            {
                "keyword": str(d.get("keyword", "")),
                "expected": str(d.get("expected", "")),
                "found": str(d.get("found", "")),
            }
            for d in _dicts(detail.get("attributes"))
        ],
        "instances_check": {
            "missing": [str(u) for u in (inst.get("missing") or ())][:LIST_LIMIT],
            "extra": [str(u) for u in (inst.get("extra") or ())][:LIST_LIMIT],
        },
        "images": _images(detail.get("images")),
        "commitment": _commitment(detail.get("commitment")),
        "levels": [str(v) for v in detail.get("levels") or ()],
        "verification": (
            {
                "status": check["status"],
                "at": check["at"],
                "run_id": check["run_id"],
                "note": str(detail.get("note", "")),
            }
            if check
            else None
        ),
        "failures": failures,
        "journal_state": (
            {"state": jstate[0], "reason": jstate[1], "detail": jstate[2], "at": jstate[3]}
            if jstate
            else None
        ),
        "match": _match(action.match),
        "corrections": [
            {"keyword": c.keyword, "before": c.before, "after": c.after} for c in action.corrections
        ],
    }


def _status(
    action: StudyAction,
    jstate: tuple[str, str, str, str] | None,
    check: dict[str, Any] | None,
    counts: Mapping[str, int],
    failures: list[dict[str, Any]],
) -> tuple[str, str]:
    """(status, the reason code that explains it)."""
    if action.action == "hold":
        return "held", action.reason
    if action.action == "skip" and action.reason != "already_complete":
        return "skipped", action.reason
    refused = jstate is not None and jstate[0] == "refused"
    # A verification older than the journal's last word on the study (apply ran again after
    # it) no longer describes the destination.
    stale = (
        check is not None and jstate is not None and bool(check["at"]) and jstate[3] > check["at"]
    )
    if check is not None and not stale:
        if check["status"] == "verified":
            return "verified", ""
        if refused:
            return "refused", jstate[1] if jstate and jstate[1] else "refused"
        return _verify_status(check["status"], check["detail"])
    if refused:
        return "refused", jstate[1] if jstate and jstate[1] else "refused"
    if counts.get(FAILED) or (jstate is not None and jstate[0] in ("incomplete", "failed")):
        top = Counter(f["reason"] for f in failures if f["reason"]).most_common(1)
        return "failed", top[0][0] if top else (jstate[1] if jstate else "") or "instances_failed"
    if action.action == "skip":
        return "skipped", action.reason
    if jstate is None:
        return "not_applied", "interrupted" if counts.get(SENT) or counts.get(PRESENT) else ""
    return "unverified", "sent_after_verification" if stale else ""


def _verify_status(status: str, detail: Mapping[str, Any]) -> tuple[str, str]:
    if status == "missing":
        return "missing", "instances_missing"
    if status == "not_found":
        return "missing", "not_found"
    if status in ("attributes_differ", "images_differ"):
        return status, status
    if status == "not_committed":
        commitment = detail.get("commitment")
        timed_out = isinstance(commitment, dict) and commitment.get("timed_out")
        return "not_committed", "commitment_timeout" if timed_out else "commitment_failed"
    # "error", or a status this pacsmig does not know yet (a newer verifier): never "verified".
    return "verify_error", "verify_error" if status == "error" else (status or "verify_error")


def _images(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    different = []
    for item in _dicts(value.get("different"))[:LIST_LIMIT]:
        diffs = _dicts(item.get("differences"))
        different.append(
            {
                "sop_uid": str(item.get("sop_uid", "")),
                "differences": [
                    {k: str(d.get(k, "")) for k in ("tag", "keyword", "expected", "found")}
                    for d in diffs[:LIST_LIMIT]
                ],
                "differences_total": len(diffs),
            }
        )
    errors = _dicts(value.get("errors"))
    return {
        "sampled": _int_or_none(value.get("sampled")) or 0,
        "equal": _int_or_none(value.get("equal")) or 0,
        "different": different,
        "different_total": len(_dicts(value.get("different"))),
        "errors": [
            {"sop_uid": str(e.get("sop_uid", "")), "reason": str(e.get("reason", ""))}
            for e in errors[:LIST_LIMIT]
        ],
        "errors_total": len(errors),
    }


def _commitment(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    failed = _dicts(value.get("failed"))
    return {
        "requested": _int_or_none(value.get("requested")) or 0,
        "committed": _int_or_none(value.get("committed")) or 0,
        "failed": [
            {"sop_uid": str(f.get("sop_uid", "")), "reason": str(f.get("reason", ""))}
            for f in failed[:LIST_LIMIT]
        ],
        "failed_total": len(failed),
        "timed_out": bool(value.get("timed_out")),
    }


# -- the journal -------------------------------------------------------------------------
def _verifications(journal: Journal) -> dict[str, dict[str, Any]]:
    """study_uid -> {status, found, at, run_id, detail}: the newest result for each study.

    Uses the journal's verification_by_study() where it has one (live results recorded by
    apply as well as verify runs), else the last finished verify run.
    """
    by_study = getattr(journal, "verification_by_study", None)
    if callable(by_study):
        got = by_study()
        if isinstance(got, tuple):  # (run, results) like latest_verification()
            got = got[-1]
        return {str(uid): _check(entry, None) for uid, entry in (got or {}).items()}
    latest = journal.latest_verification()
    if latest is None:
        return {}
    run, results = latest
    return {uid: _check(entry, run.run_id) for uid, entry in results.items()}


def _check(entry: Any, run_id: int | None) -> dict[str, Any]:
    if dataclasses.is_dataclass(entry) and not isinstance(entry, type):
        entry = dataclasses.asdict(entry)
    if not isinstance(entry, Mapping):
        entry = {}
    detail = entry.get("detail")
    if not isinstance(detail, Mapping):
        detail = entry  # a flat record: the detail keys sit beside the status
    found = entry.get("found", entry.get("found_instances", detail.get("found_instances")))
    return {
        "status": str(entry.get("status") or detail.get("status") or ""),
        "found": _int_or_none(found),
        "at": str(entry.get("at") or ""),
        "run_id": _int_or_none(entry.get("run_id", run_id)),
        "detail": dict(detail),
    }


def _failed_instances(
    journal: Journal,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, tuple[int, int]]]:
    """Failed instances per study (at most LIST_LIMIT each) and, per reason, (instances, studies)."""
    per_study: dict[str, list[dict[str, Any]]] = {}
    totals: Counter[str] = Counter()
    studies_by_reason: dict[str, set[str]] = {}
    rows: Iterable[tuple[Any, ...]] = journal.iter_rows(
        "SELECT study_uid, sop_uid, reason, code, detail FROM instances WHERE state=? "
        "ORDER BY study_uid, sop_uid",
        (FAILED,),
    )
    for study_uid, sop_uid, reason, code, detail in rows:
        reason = reason or "unknown"
        totals[reason] += 1
        studies_by_reason.setdefault(reason, set()).add(study_uid)
        listed = per_study.setdefault(study_uid, [])
        if len(listed) < LIST_LIMIT:
            listed.append(
                {"sop_uid": sop_uid, "reason": reason, "code": _hex(code), "detail": detail}
            )
    return per_study, {r: (n, len(studies_by_reason[r])) for r, n in totals.items()}


def _sent_per_second(journal: Journal) -> list[tuple[str, int]]:
    """(timestamp to the second, instances stored in it): the timeline without one row per event."""
    rows = journal.iter_rows(
        "SELECT substr(at, 1, 19), COUNT(*) FROM events WHERE sop_uid<>'' AND kind=? "
        "GROUP BY 1 ORDER BY 1",
        (SENT,),
    )
    return [(str(t), int(n)) for t, n in rows]


# -- summary -----------------------------------------------------------------------------
def _figures(
    plan: Plan, rows: list[dict[str, Any]], failed_totals: Mapping[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    """The figures that matter, each with its breakdown by reason."""

    def figure(
        key: str, label: str, studies: int, instances: int | None, reasons: Iterable[Any]
    ) -> dict[str, Any]:
        return {
            "key": key,
            "label": label,
            "studies": studies,
            "instances": instances,
            "reasons": [
                {
                    "reason": r,
                    "text": reason_text(r),
                    "studies": s,
                    "instances": i,
                }
                for r, s, i in sorted(reasons, key=lambda x: (-x[1], -(x[2] or 0), x[0]))
                if r and s
            ],
        }

    def by_reason(
        selected: list[dict[str, Any]], key: str, count: str | None
    ) -> list[tuple[str, int, int | None]]:
        studies: Counter[str] = Counter()
        instances: Counter[str] = Counter()
        for r in selected:
            studies[r[key]] += 1
            if count:
                instances[r[key]] += r[count] or 0
        return [(k, n, instances[k] if count else None) for k, n in studies.items()]

    migrate = [r for r in rows if r["action"] == "migrate"]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(r)
    with_sent = [r for r in rows if r["sent"]]
    apply_present = [r for r in rows if r["present"]]
    plan_present = [
        r for r in rows if r["action"] == "skip" and r["plan_reason"] == "already_complete"
    ]
    problems = [r for s in PROBLEM_STATUSES for r in by_status.get(s, [])]
    failed = by_status.get("failed", [])
    refused = by_status.get("refused", [])
    routes = Counter(r["route"] or "not recorded" for r in with_sent)
    route_instances: Counter[str] = Counter()
    for r in with_sent:
        route_instances[r["route"] or "not recorded"] += r["sent"]
    return [
        figure(
            "planned",
            "planned to migrate",
            len(migrate),
            sum(r["expected_instances"] for r in migrate),
            by_reason(migrate, "plan_reason", "expected_instances"),
        ),
        figure(
            "sent",
            "sent",
            len(with_sent),
            sum(r["sent"] for r in with_sent),
            [(f"route_{k}".replace(" ", "_"), n, route_instances[k]) for k, n in routes.items()],
        ),
        figure(
            "present",
            "already at the destination",
            len({r["study_uid"] for r in apply_present + plan_present}),
            sum(r["present"] for r in apply_present)
            + sum(r["expected_instances"] for r in plan_present),
            [
                (
                    "already_at_destination",
                    len(apply_present),
                    sum(r["present"] for r in apply_present),
                ),
                (
                    "already_complete",
                    len(plan_present),
                    sum(r["expected_instances"] for r in plan_present),
                ),
            ],
        ),
        figure(
            "verified",
            "verified",
            len(by_status.get("verified", [])),
            sum(r["found_instances"] or 0 for r in by_status.get("verified", [])),
            by_reason(by_status.get("verified", []), "plan_reason", "found_instances"),
        ),
        figure(
            "problems",
            "failed verification",
            len(problems),
            None,
            by_reason(problems, "reason", None),
        ),
        figure(
            "missing",
            "with instances missing at the destination",
            sum(1 for r in rows if r["missing_count"]),
            sum(r["missing_count"] for r in rows),
            [],
        ),
        figure(
            "held",
            "held",
            len(by_status.get("held", [])),
            sum(r["expected_instances"] for r in by_status.get("held", [])),
            by_reason(by_status.get("held", []), "reason", "expected_instances"),
        ),
        figure(
            "skipped",
            "skipped",
            len(by_status.get("skipped", [])),
            sum(r["expected_instances"] for r in by_status.get("skipped", [])),
            by_reason(by_status.get("skipped", []), "reason", "expected_instances"),
        ),
        figure(
            "failed",
            "failed (instances that did not transfer)",
            len(failed),
            sum(n for n, _ in failed_totals.values()),
            [(r, s, n) for r, (n, s) in failed_totals.items()],
        ),
        figure(
            "refused",
            "refused",
            len(refused),
            sum(r["expected_instances"] for r in refused),
            by_reason(refused, "reason", "expected_instances"),
        ),
        figure(
            "unverified",
            "sent, not verified yet",
            len(by_status.get("unverified", [])),
            None,
            by_reason(by_status.get("unverified", []), "reason", None),
        ),
        figure(
            "not_applied",
            "not applied yet",
            len(by_status.get("not_applied", [])),
            sum(r["expected_instances"] for r in by_status.get("not_applied", [])),
            [],
        ),
    ]


def _filter_options(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    statuses = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["reason"])
    routes = Counter(r["route"] for r in rows if r["route"])
    modalities = Counter(m for r in rows for m in set(r["modalities"]))
    return {
        "status": [
            {"value": s, "label": STATUS_LABEL[s], "studies": statuses[s]}
            for s in STATUS_ORDER
            if statuses.get(s)
        ],
        "reason": [
            {"value": k, "label": reason_text(k), "studies": n} for k, n in sorted(reasons.items())
        ],
        "route": [{"value": k, "label": k, "studies": n} for k, n in sorted(routes.items())],
        "modality": [{"value": k, "label": k, "studies": n} for k, n in sorted(modalities.items())],
    }


# -- small helpers -----------------------------------------------------------------------
def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, (list, tuple)) else []


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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
    return {
        "kind": e.kind,
        "ae_title": e.ae_title,
        "host": e.host,
        "port": e.port,
        "retrieve": e.retrieve,
        "roots": list(e.roots),
    }


def _hex(code: int | None) -> str:
    return f"0x{code:04X}" if isinstance(code, int) else ""
