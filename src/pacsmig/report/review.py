"""The change-review page: what apply will do to every study, grouped for a fast sign-off.

``review_context`` turns a plan into plain dicts and lists (no pacsmig objects, no HTML);
``render_review`` renders them with ``templates/review.html.j2``. The page shows, in this
order: the studies a person must decide on (holds, by reason), the matched studies by match
rule with the HIS/RIS corrections apply will write, and the studies migrated without an order.
Within a group the studies with corrections come first, identical correction patterns (the same
set of attributes changed) together, so a reviewer checks one pattern at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pacsmig.plan.model import ACTIONS, REASONS, Plan, StudyAction, summarize
from pacsmig.report.render import render_html

TEMPLATE: Final = "review.html.j2"

# Why a study has no order, or is held: one sentence a reviewer can act on.
HOLD_REASONS: Final[dict[str, str]] = {
    "ambiguous_candidates": (
        "More than one RIS order fits this study equally well; choose the right order with an "
        "override, or leave the study as it is."
    ),
    "order_claimed_twice": (
        "The same RIS order fits more than one study; decide which study the order belongs to "
        "with an override."
    ),
    "patient_conflict": (
        "The archive files this study under more than one patient ID; resolve the patient "
        "identity before it is migrated."
    ),
    "patient_id_conflict": (
        "The same Study Instance UID is filed under more than one Patient ID; resolve the "
        "patient identity before it is migrated."
    ),
    "identity_conflict": (
        "An order fits by accession number or patient ID, but its patient demographics "
        "contradict the study's; check for a mistyped accession or a wrong patient."
    ),
    "no_order": (
        "No RIS order fits this study, so nothing confirms or corrects its patient and study "
        "attributes."
    ),
    "override_skip": "A person decided in an override that this study is not migrated.",
    "override_unknown_order": (
        "An override names an order that is not in the order list; fix the override or the "
        "order export."
    ),
    "corrections_at_destination": (
        "The order corrects this study, but the destination already holds copies with the old "
        "values; correct them there, or delete them and plan again."
    ),
    "invalid_correction": (
        "A corrected value from the order does not fit its DICOM attribute (too long or the "
        "wrong form); fix the order export or override the match."
    ),
}

RULES: Final[tuple[str, ...]] = ("accession", "patient-date-modality", "demographics", "override")
RULE_TITLES: Final[dict[str, str]] = {
    "accession": "Matched by accession number",
    "patient-date-modality": "Matched by patient ID, date and modality",
    "demographics": "Matched by demographics (birth date, date, modality and name)",
    "override": "Matched by a person's override",
}
RULE_TEXT: Final[dict[str, str]] = {
    "accession": "The order's accession number equals the study's.",
    "patient-date-modality": (
        "Same patient ID, study and order date within the window, compatible modality."
    ),
    "demographics": (
        "Same birth date, dates within the window, compatible modality and a similar name; "
        "the score is the name similarity (1.00 = identical). Check these most carefully."
    ),
    "override": "A person assigned this order in the spec's overrides.",
}

# Attributes in the order a reviewer reads them; others follow alphabetically.
_KEYWORD_ORDER: Final[dict[str, int]] = {
    k: i
    for i, k in enumerate(
        (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyDate",
            "StudyDescription",
        )
    )
}

# Blanks and invisible characters a reviewer must see: at the edges, doubled, or not a space.
_INVISIBLE: Final = r"\s\x00-\x1f\x7f\u200b-\u200f\u2060\ufeff"
_PLAIN: Final = re.compile(rf"[^{_INVISIBLE}](?:[^{_INVISIBLE}]| (?=[^{_INVISIBLE}]))*\Z")
_SPECIAL: Final = re.compile(rf"[{_INVISIBLE}]+")
_GLYPHS: Final[dict[str, str]] = {" ": "\u2423", "\t": "\u21e5", "\n": "\u21b5", "\r": "\u240d"}
_DATE: Final = re.compile(r"\d{8}\Z")


def review_context(
    plan: Plan, *, fingerprint: str, generated_at: str, approval: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The review page's context: plain dicts, lists, strings and numbers only.

    ``approval`` is the sign-off record as a mapping (``by``, ``at``, ``note``, ``auto``,
    ``fingerprint``), or None. It counts as binding this plan when its ``matches`` key says so
    or, without that key, when its ``fingerprint`` equals ``fingerprint``.
    """
    has_match = any(a.match is not None for a in plan.actions)
    rows = [_row(a) for a in plan.actions]
    groups = _groups(rows, has_match)
    h = plan.header
    used = {r["reason"] for r in rows} | {r["hold_reason"] for r in rows if r["hold_reason"]}
    reasons = dict(HOLD_REASONS)
    for code in sorted(used - reasons.keys()):
        reasons[code] = _reason_text(code)
    return {
        "title": f"Change review: {h.name}",
        "plan": {
            "name": h.name,
            "created_at": h.created_at,
            "pacsmig_version": h.pacsmig_version,
            "spec_digest": h.spec_digest,
            "source": _endpoint(h.source),
            "destination": _endpoint(h.destination),
        },
        "fingerprint": fingerprint,
        "generated_at": generated_at,
        "signoff": _signoff(approval, fingerprint),
        "has_match": has_match,
        "summary": _summary(plan, rows, has_match),
        "toc": [
            {
                "id": g["id"],
                "kind": g["kind"],
                "title": g["title"],
                "count": g["count"],
                "corrected": g["corrected"],
            }
            for g in groups
        ],
        "groups": groups,
        "reasons": reasons,
        "rule_text": dict(RULE_TEXT),
    }


def render_review(context: dict[str, Any]) -> str:
    """The review page as one self-contained HTML document."""
    return render_html(TEMPLATE, context)


# ---------------------------------------------------------------------------------------
# Rows


def _row(a: StudyAction) -> dict[str, Any]:
    m = a.match if isinstance(a.match, Mapping) else None
    order_id = _opt_str(m.get("order_id")) if m else ""
    rule = _opt_str(m.get("rule")) if m else ""
    hold_reason = _opt_str(m.get("hold_reason")) if m else ""
    if a.action == "hold" and not hold_reason:
        hold_reason = a.reason
    elif m is not None and not order_id and not hold_reason:
        # Not held, no order: a person's skip override, or migrated as is without an order.
        hold_reason = a.reason if a.reason in HOLD_REASONS else "no_order"
    corrections = sorted(
        (_correction(c.keyword, c.before, c.after) for c in a.corrections),
        key=lambda c: _keyword_key(c["keyword"]),
    )
    keywords = tuple(c["keyword"] for c in corrections)
    candidates = _candidates(m.get("candidates")) if m else []
    return {
        "study_uid": a.study_uid,
        "action": a.action,
        "reason": a.reason,
        "reason_text": _reason_text(a.reason),
        "hold_reason": hold_reason,
        "patient_id": a.patient_id,
        "patient_name": a.patient_name,
        "birth_date": _date(a.birth_date),
        "sex": a.sex,
        "study_date": _date(a.study_date),
        "accession": a.accession,
        "modalities": " ".join(a.modalities),
        "description": a.description,
        "series": a.series_count,
        "instances": a.instance_count,
        "detail": a.detail,
        "note": _note(a, hold_reason, order_id, candidates),
        "order_id": order_id,
        "rule": rule,
        "score": _score(m.get("score")) if m else "",
        "score_low": _low(m.get("score")) if m else False,
        "candidates": candidates,
        "corrections": corrections,
        "pattern": " + ".join(keywords),
        # Text lines the row needs at least; the page estimates off-screen heights from it.
        "lines": max(2, len(corrections), len(candidates)),
    }


def _note(a: StudyAction, hold_reason: str, order_id: str, candidates: list[str]) -> str:
    """The line under a study's description: what is unusual about its action, if anything."""
    if a.action == "hold":
        # The candidates have their own column; the detail would only repeat them.
        return "" if candidates else a.detail
    notes = []
    if a.action == "skip" or a.reason != "not_at_destination":
        notes.append(_reason_text(a.reason))
    if not order_id and hold_reason not in ("", "no_order", a.reason):
        notes.append(_reason_text(hold_reason))
    return " ".join(notes)


def _correction(keyword: str, before: str, after: str) -> dict[str, Any]:
    # *_show is None for an ordinary value (the template prints the value itself), else
    # segments [kind, text]: 't' text, 'w' blanks made visible, 'e' the empty value.
    return {
        "keyword": keyword,
        "before": before,
        "after": after,
        "before_show": _visible(before),
        "after_show": _visible(after),
    }


def _visible(value: str) -> list[list[str]] | None:
    if _PLAIN.match(value):
        return None
    if not value:
        return [["e", "(empty)"]]
    parts: list[list[str]] = []
    pos = 0
    for m in _SPECIAL.finditer(value):
        run = m.group()
        edge = m.start() == 0 or m.end() == len(value)
        if run == " " and not edge:
            continue  # an ordinary word gap stays part of the text
        if m.start() > pos:
            parts.append(["t", value[pos : m.start()]])
        parts.append(["w", "".join(_GLYPHS.get(ch) or f"<U+{ord(ch):04X}>" for ch in run)])
        pos = m.end()
    if pos < len(value):
        parts.append(["t", value[pos:]])
    return parts


def _keyword_key(keyword: str) -> tuple[int, str]:
    return (_KEYWORD_ORDER.get(keyword, len(_KEYWORD_ORDER)), keyword)


def _opt_str(value: object) -> str:
    return "" if value is None else str(value)


def _candidates(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return [str(value)]


def _score(value: object) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        return f"{value:.2f}"
    return str(value)


def _low(value: object) -> bool:
    """A score below 1 (an inexact name match) deserves a second look."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value < 1


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if _DATE.match(value) else value


def _reason_text(code: str) -> str:
    text = HOLD_REASONS.get(code) or REASONS.get(code) or code.replace("_", " ")
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _endpoint(e: Any) -> dict[str, Any]:
    return {"ae_title": e.ae_title, "host": e.host, "port": e.port}


# ---------------------------------------------------------------------------------------
# Groups


def _groups(rows: list[dict[str, Any]], has_match: bool) -> list[dict[str, Any]]:
    holds: dict[str, list[dict[str, Any]]] = {}
    by_rule: dict[str, list[dict[str, Any]]] = {}
    migrate: list[dict[str, Any]] = []
    skip: list[dict[str, Any]] = []
    for r in rows:
        if r["action"] == "hold":
            holds.setdefault(r["hold_reason"] or r["reason"], []).append(r)
        elif has_match and r["order_id"]:
            by_rule.setdefault(r["rule"] or "unknown", []).append(r)
        elif r["action"] == "skip":
            skip.append(r)
        else:
            migrate.append(r)

    out: list[dict[str, Any]] = []

    def add(kind: str, key: str, title: str, text: str, members: list[dict[str, Any]]) -> None:
        if members:
            out.append(_group(len(out) + 1, kind, key, title, text, members))

    hold_order = list(HOLD_REASONS)
    for code in sorted(holds, key=lambda c: (_index(hold_order, c), c)):
        add("hold", code, f"Held: {_short(code)}", _reason_text(code), holds[code])
    for rule in sorted(by_rule, key=lambda r: (_index(list(RULES), r), r)):
        title = RULE_TITLES.get(rule, f"Matched by rule {rule}")
        add("rule", rule, title, RULE_TEXT.get(rule, ""), by_rule[rule])
    if has_match:
        add(
            "none",
            "no_order",
            "No order: migrated as is",
            "No RIS order was matched; apply sends these studies with their archive values.",
            migrate,
        )
        add(
            "skip",
            "skip",
            "Not migrated (skip)",
            "Apply leaves these studies alone; the reason is given per study.",
            skip,
        )
    else:
        add("migrate", "migrate", "Migrate", "Apply sends these studies.", migrate)
        add(
            "skip",
            "skip",
            "Skip",
            "Apply leaves these studies alone; the reason is given per study.",
            skip,
        )
    return out


def _group(
    n: int, kind: str, key: str, title: str, text: str, members: list[dict[str, Any]]
) -> dict[str, Any]:
    sizes = Counter(r["pattern"] for r in members)
    # Corrected studies first, the most frequent pattern first, then plan order (stable).
    rank = {p: i for i, p in enumerate(sorted(sizes, key=lambda p: (p == "", -sizes[p], p)))}
    studies = sorted(members, key=lambda r: rank[r["pattern"]])
    patterns = []
    start = 0
    for p in sorted(sizes, key=rank.__getitem__):
        patterns.append(
            {
                "label": p or "no corrections",
                "keywords": p.split(" + ") if p else [],
                "count": sizes[p],
                "corrected": p != "",
                "studies": studies[start : start + sizes[p]],
            }
        )
        start += sizes[p]
    corrected = sum(1 for r in members if r["corrections"])
    return {
        "id": f"g{n}",
        "kind": kind,
        "key": key,
        "title": title,
        "text": text,
        "count": len(members),
        "corrected": corrected,
        "corrections": sum(len(r["corrections"]) for r in members),
        "instances": sum(r["instances"] for r in members),
        "with_order": any(r["order_id"] for r in members),
        "patterns": patterns,
        # Closed only when nothing in it needs a look: many studies, none changed, none held.
        "open": kind == "hold" or corrected > 0 or len(members) <= 200,
    }


def _index(seq: list[str], item: str) -> int:
    return seq.index(item) if item in seq else len(seq)


def _short(code: str) -> str:
    return code.replace("_", " ")


# ---------------------------------------------------------------------------------------
# Summary and sign-off


def _summary(plan: Plan, rows: list[dict[str, Any]], has_match: bool) -> dict[str, Any]:
    s = summarize(plan)
    rules: Counter[str] = Counter()
    hold_reasons: Counter[str] = Counter()
    keywords: Counter[str] = Counter()
    keyword_studies: Counter[str] = Counter()
    for r in rows:
        if r["action"] == "hold" or (has_match and not r["order_id"] and r["hold_reason"]):
            hold_reasons[r["hold_reason"] or r["reason"]] += 1
        if has_match:
            rules[r["rule"] if r["order_id"] else ""] += 1
        for c in r["corrections"]:
            keywords[c["keyword"]] += 1
        for k in {c["keyword"] for c in r["corrections"]}:
            keyword_studies[k] += 1
    rule_order = list(RULES)
    return {
        "studies": len(rows),
        "instances": sum(r["instances"] for r in rows),
        "by_action": [
            {"action": k, "studies": s.studies[k], "instances": s.instances[k]} for k in ACTIONS
        ],
        "by_rule": [
            {
                "rule": k,
                "label": k or "no order",
                "studies": rules[k],
            }
            for k in sorted(rules, key=lambda k: (k == "", _index(rule_order, k), k))
        ],
        "by_hold_reason": [
            {"code": k, "text": _reason_text(k), "studies": hold_reasons[k]}
            for k in sorted(hold_reasons, key=lambda k: (_index(list(HOLD_REASONS), k), k))
        ],
        "corrections_by_keyword": [
            {"keyword": k, "corrections": keywords[k], "studies": keyword_studies[k]}
            for k in sorted(keywords, key=_keyword_key)
        ],
        "corrections": sum(keywords.values()),
        "studies_with_corrections": sum(1 for r in rows if r["corrections"]),
        "held": s.studies["hold"],
        "matched": sum(1 for r in rows if r["order_id"]),
    }


def _signoff(approval: Mapping[str, Any] | None, fingerprint: str) -> dict[str, Any]:
    if approval is None:
        return {"state": "none", "by": "", "at": "", "note": "", "auto": False, "fingerprint": ""}
    signed = _opt_str(approval.get("fingerprint"))
    matches = approval.get("matches")
    bound = bool(matches) if matches is not None else signed == fingerprint
    return {
        "state": "signed" if bound else "stale",
        "by": _opt_str(approval.get("by")),
        "at": _opt_str(approval.get("at")),
        "note": _opt_str(approval.get("note")),
        "auto": bool(approval.get("auto", False)),
        "fingerprint": signed,
    }
