"""Inventory of legacy storage for planning: scan, catalog, and what the plan must show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsmig.inventory.catalog import write_catalog
from pacsmig.inventory.files import Progress, scan
from pacsmig.inventory.model import StudyRecord
from pacsmig.plan.model import DuplicateFile, QuarantinedFile
from pacsmig.spec.model import FilesystemSource, Spec


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInventory:
    studies: list[StudyRecord]
    holds: dict[str, str]  # study_uid -> why it is held (conflicting copies)
    quarantine: tuple[QuarantinedFile, ...]
    duplicates: tuple[DuplicateFile, ...]
    summary: dict[str, Any]


def inventory_files(
    spec: Spec, source: FilesystemSource, index_path: Path, progress: Progress | None = None
) -> FileInventory:
    index_path.parent.mkdir(parents=True, exist_ok=True)
    result = scan(
        source.roots,
        include=source.include,
        exclude=source.exclude,
        index_path=index_path,
        workers=source.workers,
        progress=progress,
    )
    write_catalog(index_path, result.instances)
    instances = sum(len(v) for v in result.instances.values())
    accounted = instances + len(result.duplicates) + len(result.quarantine) + len(result.dicomdirs)
    return FileInventory(
        studies=result.studies,
        holds={uid: "; ".join(lines) for uid, lines in result.conflicts.items()},
        quarantine=tuple(
            QuarantinedFile(path=q.path, reason=q.reason, detail=q.detail)
            for q in result.quarantine
        ),
        duplicates=tuple(
            DuplicateFile(sop_uid=sop, kept=kept, other=other)
            for sop, kept, other in result.duplicates
        ),
        summary={
            "kind": "filesystem",
            "files_seen": result.files_seen,
            "files_read": result.files_read,
            "instances": instances,
            "quarantined": len(result.quarantine),
            "duplicates": len(result.duplicates),
            "dicomdirs": len(result.dicomdirs),
            # Every file seen must be accounted for: an instance, a duplicate, quarantined, or
            # a DICOMDIR.
            "complete": accounted == result.files_seen,
            "note": ""
            if accounted == result.files_seen
            else f"{result.files_seen - accounted} files seen but not accounted for",
        },
    )
