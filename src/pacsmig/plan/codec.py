"""The one place plans become bytes and back: canonical JSON, versions, fingerprint."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from pacsmig.errors import PlanError, StalePlanError
from pacsmig.plan.model import (
    Correction,
    DuplicateFile,
    Endpoint,
    ExpectedSeries,
    Plan,
    PlanHeader,
    QuarantinedFile,
    StudyAction,
)
from pacsmig.resources import load_schema

FORMAT_VERSION = 1


def canonical_json(value: Any) -> bytes:
    """Sorted keys, fixed separators, UTF-8: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _endpoint_dict(e: Endpoint) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": e.kind, "ae_title": e.ae_title, "host": e.host, "port": e.port}
    if e.retrieve:
        d["retrieve"] = e.retrieve
    if e.roots:
        d["roots"] = list(e.roots)
    return d


def action_to_dict(a: StudyAction) -> dict[str, Any]:
    d: dict[str, Any] = {
        "study_uid": a.study_uid,
        "action": a.action,
        "reason": a.reason,
        "patient": {
            "id": a.patient_id,
            "name": a.patient_name,
            "birth_date": a.birth_date,
            "sex": a.sex,
        },
        "study": {
            "date": a.study_date,
            "accession": a.accession,
            "description": a.description,
            "modalities": list(a.modalities),
        },
        "expected": {
            "series": a.series_count,
            "instances": a.instance_count,
            "per_series": [
                {
                    "series_uid": s.series_uid,
                    "modality": s.modality,
                    "number": s.number,
                    "description": s.description,
                    "instances": s.instances,
                }
                for s in a.series
            ],
        },
        "found_at_destination": a.found_at_destination,
        "corrections": [
            {"keyword": c.keyword, "before": c.before, "after": c.after} for c in a.corrections
        ],
    }
    if a.detail:
        d["detail"] = a.detail
    if a.match is not None:
        d["match"] = a.match
    for key in ("route", "transcode", "priority"):
        if getattr(a, key):
            d[key] = getattr(a, key)
    return d


def action_from_dict(d: dict[str, Any]) -> StudyAction:
    p, s, e = d["patient"], d["study"], d["expected"]
    return StudyAction(
        study_uid=d["study_uid"],
        action=d["action"],
        reason=d["reason"],
        patient_id=p["id"],
        patient_name=p["name"],
        birth_date=p["birth_date"],
        sex=p["sex"],
        study_date=s["date"],
        accession=s["accession"],
        description=s["description"],
        modalities=tuple(s["modalities"]),
        series=tuple(
            ExpectedSeries(
                series_uid=x["series_uid"],
                modality=x["modality"],
                number=x["number"],
                description=x["description"],
                instances=x["instances"],
            )
            for x in e["per_series"]
        ),
        found_at_destination=d["found_at_destination"],
        detail=d.get("detail", ""),
        corrections=tuple(
            Correction(keyword=c["keyword"], before=c["before"], after=c["after"])
            for c in d["corrections"]
        ),
        match=d.get("match"),
        route=d.get("route", ""),
        transcode=d.get("transcode", ""),
        priority=d.get("priority", ""),
    )


def header_to_dict(h: PlanHeader) -> dict[str, Any]:
    return {
        "name": h.name,
        "pacsmig_version": h.pacsmig_version,
        "spec_digest": h.spec_digest,
        "created_at": h.created_at,
        "source": _endpoint_dict(h.source),
        "destination": _endpoint_dict(h.destination),
        "spec": h.spec,
        **({"inputs": h.inputs} if h.inputs else {}),
        **({"base_dir": h.base_dir} if h.base_dir else {}),
        **({"inventory": h.inventory} if h.inventory else {}),
    }


def _endpoint_from(d: dict[str, Any]) -> Endpoint:
    return Endpoint(
        kind=d["kind"],
        ae_title=d["ae_title"],
        host=d["host"],
        port=d["port"],
        retrieve=d.get("retrieve", ""),
        roots=tuple(d.get("roots", ())),
    )


def header_from_dict(d: dict[str, Any]) -> PlanHeader:
    return PlanHeader(
        name=d["name"],
        pacsmig_version=d["pacsmig_version"],
        spec_digest=d["spec_digest"],
        created_at=d["created_at"],
        source=_endpoint_from(d["source"]),
        destination=_endpoint_from(d["destination"]),
        spec=d["spec"],
        inputs=d.get("inputs", {}),
        base_dir=d.get("base_dir", ""),
        inventory=d.get("inventory", {}),
    )


def fingerprint(plan: Plan) -> str:
    """sha256 of the canonical plan minus its creation time: an unchanged world re-plans equal."""
    header = header_to_dict(plan.header)
    del header["created_at"]
    body = {
        "format_version": FORMAT_VERSION,
        "header": header,
        "actions": [action_to_dict(a) for a in plan.actions],
        **_files_dict(plan),
    }
    return digest(body)


def _files_dict(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if plan.quarantine:
        out["quarantine"] = [
            {"path": q.path, "reason": q.reason, "detail": q.detail} for q in plan.quarantine
        ]
    if plan.duplicates:
        out["duplicates"] = [
            {"sop_uid": d.sop_uid, "kept": d.kept, "other": d.other} for d in plan.duplicates
        ]
    return out


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint(plan),
        "header": header_to_dict(plan.header),
        "actions": [action_to_dict(a) for a in plan.actions],
        **_files_dict(plan),
    }


def dumps(plan: Plan) -> str:
    # One action per line: readable in a diff and in a code review, still plain JSON.
    d = plan_to_dict(plan)
    head = {k: v for k, v in d.items() if k != "actions"}
    lines = [json.dumps(a, sort_keys=True, ensure_ascii=False) for a in d["actions"]]
    head_text = json.dumps(head, sort_keys=True, indent=1, ensure_ascii=False)
    body = ",\n  ".join(lines)
    return (
        head_text[:-2] + ',\n "actions": [\n  ' + body + "\n ]\n}\n"
        if lines
        else (head_text[:-2] + ',\n "actions": []\n}\n')
    )


def _upgrade(doc: dict[str, Any], where: str) -> dict[str, Any]:
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise PlanError(f"{where}: not a pacsmig plan (no integer format_version)")
    if version > FORMAT_VERSION:
        raise PlanError(
            f"{where}: plan format {version} is newer than this pacsmig understands "
            f"({FORMAT_VERSION}); upgrade pacsmig"
        )
    # Chained upgrades of older formats go here, one function per step.
    return doc


@functools.cache
def _fast_validator() -> Callable[[Any], Any]:
    import fastjsonschema

    return fastjsonschema.compile(load_schema("plan.schema.json"), use_default=False)


def _fast_valid(doc: Any) -> bool:
    """A compiled check of the plan schema: a 100,000-study plan took jsonschema ~28 s.

    Only a plan it rejects goes through jsonschema, for the precise message (and the final
    word, should the two ever disagree).
    """
    import fastjsonschema

    try:
        _fast_validator()(doc)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _schema_error(doc: Any) -> jsonschema.ValidationError | None:
    validator = jsonschema.Draft202012Validator(load_schema("plan.schema.json"))
    return jsonschema.exceptions.best_match(validator.iter_errors(doc))


def loads(text: str, *, where: str = "<plan>", check_integrity: bool = True) -> Plan:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{where} line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{where}: not a pacsmig plan")
    doc = _upgrade(doc, where)
    error = None if _fast_valid(doc) else _schema_error(doc)
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PlanError(
            f"{where}: plan fails its schema at {path}: {error.message.splitlines()[0]}"
        )
    plan = Plan(
        header=header_from_dict(doc["header"]),
        actions=tuple(action_from_dict(a) for a in doc["actions"]),
        quarantine=tuple(
            QuarantinedFile(path=q["path"], reason=q["reason"], detail=q["detail"])
            for q in doc.get("quarantine", [])
        ),
        duplicates=tuple(
            DuplicateFile(sop_uid=x["sop_uid"], kept=x["kept"], other=x["other"])
            for x in doc.get("duplicates", [])
        ),
    )
    if check_integrity:
        actual = fingerprint(plan)
        if actual != doc["fingerprint"]:
            raise StalePlanError(
                f"{where}: the plan was changed after pacsmig wrote it (fingerprint "
                f"{doc['fingerprint'][:12]} recorded, content is {actual[:12]}); "
                "re-run 'pacsmig plan'"
            )
    return plan


def read_plan(path: str | Path, *, check_integrity: bool = True) -> Plan:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{path}: plan file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read plan: {exc}") from None
    return loads(text, where=str(path), check_integrity=check_integrity)


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plan(plan: Plan, path: str | Path) -> str:
    """Write the plan; return its fingerprint."""
    atomic_write(Path(path), dumps(plan))
    return fingerprint(plan)
