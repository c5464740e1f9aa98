"""Compile inventory facts into a plan. Pure: values in, values out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pacsmig import __version__
from pacsmig.apply.process import CorrectionError, validate_corrections
from pacsmig.inventory.model import Holdings, StudyRecord
from pacsmig.plan.codec import digest
from pacsmig.plan.model import (
    Action,
    DuplicateFile,
    Endpoint,
    ExpectedSeries,
    Plan,
    PlanHeader,
    QuarantinedFile,
    StudyAction,
)
from pacsmig.plan.priority import prioritise
from pacsmig.spec.model import FilesystemSource, Spec

if TYPE_CHECKING:  # pandas and rapidfuzz load only when a plan reconciles orders
    from pacsmig.reconcile.reconcile import Reconciled


def spec_digest(spec: Spec) -> str:
    return digest(spec.document)


def header_for(
    spec: Spec,
    created_at: str,
    inputs: Mapping[str, Any] | None = None,
    inventory: Mapping[str, Any] | None = None,
) -> PlanHeader:
    src, dst = spec.source, spec.destination
    if isinstance(src, FilesystemSource):
        source = Endpoint(
            kind=src.kind, ae_title="", host="", port=0, roots=tuple(str(r) for r in src.roots)
        )
    else:
        source = Endpoint(
            kind=src.kind,
            ae_title=src.ae_title,
            host=src.host,
            port=src.port,
            retrieve=src.retrieve,
        )
    return PlanHeader(
        name=spec.name,
        pacsmig_version=__version__,
        spec_digest=spec_digest(spec),
        created_at=created_at,
        source=source,
        destination=Endpoint(ae_title=dst.ae_title, host=dst.host, port=dst.port),
        spec=spec.document,
        inputs=dict(inputs or {}),
        base_dir=str(spec.base_dir),
        inventory=dict(inventory or {}),
    )


def decide(study: StudyRecord, holdings: Holdings | None) -> tuple[Action, str, str]:
    """(action, reason, detail) for one study given what the destination holds of it."""
    if study.other_patient_ids:
        return (
            "hold",
            "patient_id_conflict",
            f"{len(study.other_patient_ids)} Patient IDs at the source for this study",
        )
    if study.instance_count == 0:
        return "skip", "empty_study", ""
    found = holdings.series_counts if holdings else {}
    if not found:
        return "migrate", "not_at_destination", ""
    complete = all(found.get(s.series_uid, 0) == s.instance_count for s in study.series)
    extra_series = set(found) - {s.series_uid for s in study.series}
    if complete and not extra_series:
        return "skip", "already_complete", ""
    total = sum(found.values())
    if total > study.instance_count or extra_series:
        # Apply compares instance by instance and sends only what is missing.
        return (
            "migrate",
            "more_at_destination",
            f"{total} instances at the destination, {study.instance_count} at the source",
        )
    return (
        "migrate",
        "incomplete_at_destination",
        f"{total} of {study.instance_count} instances already at the destination",
    )


def _reconciled(
    decision: tuple[Action, str, str], rec: Reconciled, holdings: Holdings | None
) -> tuple[Action, str, str]:
    action, reason, detail = decision
    if action == "hold":  # a conflict at the source outranks anything the orders say
        return decision
    if rec.hold_reason:
        candidates = rec.match.get("candidates") or []
        text = f"candidates: {', '.join(candidates)}" if candidates else ""
        return "hold", rec.hold_reason, text
    if rec.skip_reason:
        return "skip", rec.skip_reason, ""
    try:
        validate_corrections(rec.corrections)
    except CorrectionError as exc:
        # A value the DICOM attribute cannot hold (too long, wrong form): a person fixes the
        # order or overrides; apply would only fail every instance.
        return "hold", "invalid_correction", str(exc)
    if rec.corrections and holdings is not None and holdings.instance_count:
        # Sending corrected copies next to uncorrected ones would leave two versions of the
        # truth at the destination: a person decides (correct it there, or delete and re-plan).
        return "hold", "corrections_at_destination", f"{holdings.instance_count} instances there"
    return decision


def build_action(
    study: StudyRecord, holdings: Holdings | None, rec: Reconciled | None = None
) -> StudyAction:
    decision = decide(study, holdings)
    action, reason, detail = _reconciled(decision, rec, holdings) if rec else decision
    return StudyAction(
        study_uid=study.study_uid,
        action=action,
        reason=reason,
        detail=detail,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        birth_date=study.birth_date,
        sex=study.sex,
        study_date=study.study_date,
        accession=study.accession,
        description=study.description,
        modalities=tuple(
            sorted(set(study.modalities) | {s.modality for s in study.series if s.modality})
        ),
        series=tuple(
            ExpectedSeries(
                series_uid=s.series_uid,
                modality=s.modality,
                number=s.series_number,
                description=s.description,
                instances=s.instance_count,
            )
            for s in sorted(study.series, key=lambda s: s.series_uid)
        ),
        found_at_destination=holdings.instance_count if holdings else 0,
        corrections=rec.corrections if rec else (),
        match=rec.match if rec else None,
    )


def build_plan(
    spec: Spec,
    studies: Sequence[StudyRecord],
    holdings: Mapping[str, Holdings],
    *,
    created_at: str,
    reconciled: Mapping[str, Reconciled] | None = None,
    inputs: Mapping[str, Any] | None = None,
    inventory: Mapping[str, Any] | None = None,
    source_holds: Mapping[str, str] | None = None,
    quarantine: Sequence[QuarantinedFile] = (),
    duplicates: Sequence[DuplicateFile] = (),
    patients: frozenset[str] = frozenset(),
    order_values: Mapping[str, str] | None = None,
) -> Plan:
    """The plan for ``studies``, in the order apply takes them (``spec.priority``).

    ``patients`` are the patient IDs of the priority patients file and ``order_values`` the
    priority orders column (order_id -> value), both read by the caller.
    """
    rec = reconciled or {}
    holds = source_holds or {}
    actions = [
        with_route(
            spec,
            _source_hold(build_action(s, holdings.get(s.study_uid), rec.get(s.study_uid)), holds),
        )
        for s in studies
    ]
    # Holds first (a person must look at them), then migrations in the order apply takes
    # them, then skips; deterministic for anything but priority.order "as-found".
    ordered = prioritise(actions, spec.priority, patients=patients, order_values=order_values)
    return Plan(
        header=header_for(spec, created_at, inputs, inventory),
        actions=ordered,
        quarantine=tuple(sorted(quarantine, key=lambda q: q.path)),
        duplicates=tuple(sorted(duplicates, key=lambda d: (d.sop_uid, d.other))),
    )


def planned_transcode(spec: Spec) -> str:
    """The conversion the destination settings ask of every relayed instance, if any."""
    dst = spec.destination
    if dst.lossy is not None:
        quality = f";quality={dst.lossy.quality}" if dst.lossy.quality else ""
        return f"lossy:{dst.lossy.syntax}{quality}"
    if dst.syntaxes:
        return "prefer:" + ",".join(dst.syntaxes)
    return ""


def with_route(spec: Spec, action: StudyAction) -> StudyAction:
    """Choose how a migrated study travels (issue: direct only when nothing must change)."""
    if action.action != "migrate":
        return action
    transcode = planned_transcode(spec)
    dst = spec.destination
    direct = (
        not isinstance(spec.source, FilesystemSource)
        and dst.move_ae is not None
        and dst.route != "relay"
        and not action.corrections
        and not transcode
    )
    return dataclasses.replace(action, route="direct" if direct else "relay", transcode=transcode)


def _source_hold(action: StudyAction, holds: Mapping[str, str]) -> StudyAction:
    """Two files with one SOP Instance UID and different content: a person decides."""
    detail = holds.get(action.study_uid)
    if detail is None or action.action == "hold":
        return action
    return dataclasses.replace(action, action="hold", reason="sop_uid_conflict", detail=detail)
