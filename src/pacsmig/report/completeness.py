"""Account for every study of the source inventory, and say whether the migration is complete.

A study is accounted for when it has exactly one of the outcomes below, with its reason. The
migration is complete only when nothing is unaccounted, every study the plan migrates was
verified at the destination, nothing failed or was refused, and the source inventory is not
known to be incomplete. Held and skipped studies and quarantined files do not prevent it (a
person decided, or must decide, about them), but the statement names them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

# Study status (report/context.py) -> the outcome it accounts the study as.
CATEGORY_OF_STATUS = {
    "verified": "verified",
    "skipped": "skipped",
    "held": "held",
    "failed": "failed",
    "refused": "failed",
    "missing": "failed",
    "attributes_differ": "failed",
    "images_differ": "failed",
    "not_committed": "failed",
    "verify_error": "failed",
    "unverified": "unverified",
    "not_applied": "not_applied",
}
CATEGORIES = (
    ("verified", "verified at the destination"),
    ("skipped", "skipped, with reason"),
    ("held", "held for a person, with reason"),
    ("failed", "failed or refused, with reason"),
    ("unverified", "sent, not verified yet"),
    ("not_applied", "not applied yet"),
)


def account(
    rows: Sequence[Mapping[str, Any]],
    *,
    plan_study_uids: Sequence[str],
    status_labels: Mapping[str, str],
    reason_texts: Mapping[str, str],
    quarantine: Sequence[Mapping[str, Any]],
    inventory: Mapping[str, Any],
    foreign_studies: int = 0,
) -> dict[str, Any]:
    """The completeness record: outcomes with reasons, what is unaccounted, what blocks."""
    planned = set(plan_study_uids)
    repeated = len(plan_study_uids) - len(planned)
    seen: set[str] = set()
    by_category: dict[str, Counter[tuple[str, str]]] = {c: Counter() for c, _ in CATEGORIES}
    migrate_open: Counter[str] = Counter()  # status of each study to migrate not verified
    unknown_status: Counter[str] = Counter()
    migrate_total = migrate_verified = other_failed = 0
    for row in rows:
        status = str(row["status"])
        category = CATEGORY_OF_STATUS.get(status)
        if row["action"] == "migrate":
            migrate_total += 1
            if status == "verified":
                migrate_verified += 1
            else:
                migrate_open[status] += 1
        elif category == "failed":
            other_failed += 1
        if category is None:
            unknown_status[status] += 1
            continue
        if row["study_uid"] in planned:
            seen.add(row["study_uid"])
        by_category[category][(status, str(row["reason"]))] += 1
    unaccounted = sorted(planned - seen)

    categories: list[dict[str, Any]] = []
    for key, label in CATEGORIES:
        reasons = by_category[key]
        categories.append(
            {
                "category": key,
                "label": label,
                "studies": sum(reasons.values()),
                "reasons": [
                    {
                        "status": status,
                        "status_label": status_labels.get(status, status),
                        "reason": reason,
                        "text": reason_texts.get(reason, reason.replace("_", " ")),
                        "studies": n,
                    }
                    for (status, reason), n in sorted(reasons.items(), key=lambda i: (-i[1], i[0]))
                ],
            }
        )
    counts: dict[str, int] = {c["category"]: c["studies"] for c in categories}

    blockers: list[str] = []
    if unaccounted:
        blockers.append(f"{len(unaccounted):,} studies of the plan have no outcome")
    if repeated:
        blockers.append(f"{repeated:,} studies appear more than once in the plan")
    not_verified = migrate_total - migrate_verified
    if not_verified:
        detail = ", ".join(
            f"{n:,} {status_labels.get(s, s)}"
            for s, n in sorted(migrate_open.items(), key=lambda i: (-i[1], i[0]))
        )
        blockers.append(
            f"{not_verified:,} of {migrate_total:,} studies to migrate are not verified ({detail})"
        )
    missing_instances = sum(int(row.get("missing_count") or 0) for row in rows)
    if missing_instances:
        blockers.append(f"{missing_instances:,} instances missing at the destination")
    if other_failed:
        blockers.append(
            f"{other_failed:,} studies the plan found already at the destination failed "
            "verification"
        )
    if inventory.get("complete") is False:
        note = str(inventory.get("note") or "").strip()
        blockers.append(
            "the source inventory is not provably complete" + (f": {note}" if note else "")
        )
    if unknown_status:
        blockers.append(f"{sum(unknown_status.values()):,} studies have an unknown status")

    complete = not blockers
    caveats = []
    if counts["held"]:
        caveats.append(f"{counts['held']:,} held for a person's decision")
    if counts["skipped"]:
        caveats.append(f"{counts['skipped']:,} skipped with a reason")
    if quarantine:
        caveats.append(f"{len(quarantine):,} files of the source quarantined")
    if foreign_studies:
        caveats.append(f"the journal also records {foreign_studies:,} studies not in this plan")

    total = len(plan_study_uids)
    if complete:
        headline = (
            f"Complete: every planned study was verified at the destination "
            f"({total:,} studies accounted for: {counts['verified']:,} verified"
            + "".join(f", {c}" for c in caveats)
            + ")."
        )
        statement = headline
    else:
        headline = "Incomplete:"
        statement = "Incomplete: " + "; ".join(blockers) + "."
        if caveats:
            statement += " Also " + ", ".join(caveats) + "."
    return {
        "complete": complete,
        "headline": headline,
        "statement": statement,
        "blockers": blockers,
        "caveats": caveats,
        "inventory_studies": total,
        "accounted": len(seen),
        "unaccounted": len(unaccounted),
        "unaccounted_uids": unaccounted[:50],
        "migrate_total": migrate_total,
        "migrate_verified": migrate_verified,
        "quarantined_files": len(quarantine),
        "quarantine_reasons": [
            {"reason": r, "files": n}
            for r, n in Counter(str(q["reason"]) for q in quarantine).most_common()
        ],
        "inventory_complete": inventory.get("complete"),
        "inventory_note": str(inventory.get("note") or ""),
        "categories": categories,
    }
