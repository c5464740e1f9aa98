"""From orders and a source inventory to per-study decisions for the plan. Pure but for reading
the order and override files named in the spec."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsmig.errors import InputError
from pacsmig.inventory.model import StudyRecord
from pacsmig.plan.model import Correction
from pacsmig.reconcile.match import (
    MatchResult,
    corrections_for,
    match_studies,
    parse_match_rules,
)
from pacsmig.reconcile.orders import Order, read_orders_csv, read_orders_hl7, read_overrides
from pacsmig.spec.model import RisSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    """What reconciliation decided for one study: the plan builder turns it into an action."""

    match: dict[str, Any]
    corrections: tuple[Correction, ...] = ()
    hold_reason: str = ""  # non-empty: the study is held for a person
    skip_reason: str = ""  # non-empty: a person's override says not to migrate it


@dataclass(frozen=True, slots=True, kw_only=True)
class RisInputs:
    orders: list[Order]
    overrides: dict[str, str | None]
    digests: dict[str, Any]


def _digest(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def load_inputs(ris: RisSpec) -> RisInputs:
    digests: dict[str, Any] = {"orders": _digest(ris.orders)}
    if ris.format == "hl7":
        orders = read_orders_hl7(ris.orders)
    else:
        orders = read_orders_csv(ris.orders, ris.columns)
    overrides: dict[str, str | None] = {}
    if ris.overrides is not None:
        digests["overrides"] = _digest(ris.overrides)
        overrides = read_overrides(ris.overrides)
    return RisInputs(orders=orders, overrides=overrides, digests=digests)


def reconcile(
    ris: RisSpec, studies: Sequence[StudyRecord], inputs: RisInputs
) -> dict[str, Reconciled]:
    rules = parse_match_rules([dict(m) for m in ris.match])
    results = match_studies(studies, inputs.orders, rules, inputs.overrides)
    by_id = {o.order_id: o for o in inputs.orders}
    by_uid = {s.study_uid: s for s in studies}
    return {r.study_uid: _decide(r, by_uid[r.study_uid], by_id, ris) for r in results}


def _decide(
    result: MatchResult, study: StudyRecord, orders: dict[str, Order], ris: RisSpec
) -> Reconciled:
    if result.status == "matched" and result.order_id is not None:
        order = orders[result.order_id]
        corrections = tuple(
            Correction(keyword=k, before=b, after=a)
            for k, b, a in corrections_for(study, order, ris.correct)
        )
        score = None if result.score is None else round(float(result.score), 4)
        return Reconciled(
            match={"order_id": result.order_id, "rule": result.rule, "score": score},
            corrections=corrections,
        )
    if result.status == "skip":
        return Reconciled(
            match={"order_id": None, "rule": "override", "score": None, "skip": True},
            skip_reason="override_skip",
        )
    held = {
        "order_id": None,
        "rule": None,
        "score": None,
        "hold_reason": result.reason or "no_order",
        "candidates": list(result.candidates),
    }
    if result.status == "unmatched" and ris.unmatched == "migrate-as-is":
        return Reconciled(match={**held, "hold_reason": "", "unmatched": True})
    return Reconciled(match=held, hold_reason=result.reason or "no_order")
