"""Sign-off bound to a plan's fingerprint, kept beside the plan file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pacsmig.errors import ApprovalError, PlanError
from pacsmig.plan.codec import atomic_write, fingerprint
from pacsmig.plan.model import Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    fingerprint: str
    by: str
    at: str
    note: str = ""
    auto: bool = False  # recorded by --auto-approve, not by a person


def approval_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + ".approval.json")


def write_approval(plan_path: Path, approval: Approval) -> Path:
    path = approval_path(plan_path)
    atomic_write(path, json.dumps(asdict(approval), indent=1, sort_keys=True) + "\n")
    return path


def read_approval(plan_path: Path) -> Approval | None:
    path = approval_path(plan_path)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Approval(
            fingerprint=str(doc["fingerprint"]),
            by=str(doc["by"]),
            at=str(doc["at"]),
            note=str(doc.get("note", "")),
            auto=bool(doc.get("auto", False)),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{path}: unreadable sign-off record ({type(exc).__name__})") from None


def check_approval(plan_path: Path, plan: Plan) -> Approval:
    """The sign-off for exactly this plan, or ApprovalError."""
    approval = read_approval(plan_path)
    if approval is None:
        raise ApprovalError(
            f"{plan_path}: the plan has no sign-off; run 'pacsmig approve {plan_path} --by NAME' "
            "after review (or apply --auto-approve in scripts)"
        )
    actual = fingerprint(plan)
    if approval.fingerprint != actual:
        raise ApprovalError(
            f"{plan_path}: the plan changed after its sign-off by {approval.by} at {approval.at} "
            f"(signed {approval.fingerprint[:12]}, now {actual[:12]}); review and approve it again"
        )
    return approval
