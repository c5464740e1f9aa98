"""The library surface: plan, show, approve, apply, verify, report.

Each function takes paths and values and returns values; none prints or exits. The CLI is a
thin layer over these, and tests call them directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsmig.apply.executor import ApplyResult, Executor
from pacsmig.apply.executor import Progress as ApplyProgress
from pacsmig.errors import InputError
from pacsmig.inventory.dimse import Progress as InventoryProgress
from pacsmig.inventory.dimse import destination_holdings, inventory_source
from pacsmig.inventory.filesource import FileInventory, inventory_files
from pacsmig.journal.store import Journal
from pacsmig.plan.approval import Approval, check_approval, read_approval, write_approval
from pacsmig.plan.build import build_plan
from pacsmig.plan.codec import fingerprint, read_plan, write_plan
from pacsmig.plan.model import Plan
from pacsmig.plan.priority import file_digest, order_column_values, read_patients
from pacsmig.spec.load import load_spec
from pacsmig.spec.model import FilesystemSource
from pacsmig.verify.counts import Progress as VerifyProgress
from pacsmig.verify.counts import VerifyResult, verify_plan


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanOutcome:
    plan: Plan
    path: Path
    fingerprint: str


def plan(
    spec_path: str | Path,
    out_path: str | Path,
    *,
    progress: InventoryProgress | None = None,
    created_at: str | None = None,
) -> PlanOutcome:
    """Inventory the source and the destination and write the plan."""
    from pacsmig.reconcile.reconcile import load_inputs, reconcile  # pandas: only here

    spec = load_spec(spec_path)
    out = Path(out_path)
    # Read the orders and the priority inputs first: a malformed export should fail before
    # any PACS is queried.
    ris_inputs = load_inputs(spec.ris) if spec.ris else None
    inputs: dict[str, Any] = dict(ris_inputs.digests) if ris_inputs else {}
    prio = spec.priority
    patients: frozenset[str] = frozenset()
    if prio.patients is not None:
        # The digest binds the sign-off to the appointment list the order was made from.
        inputs["patients"] = file_digest(prio.patients)
        patients = read_patients(prio.patients)
    order_values: dict[str, str] = {}
    if prio.orders_column and spec.ris:
        order_values = order_column_values(spec.ris, prio.orders_column)
    files: FileInventory | None = None
    if isinstance(spec.source, FilesystemSource):
        files = inventory_files(spec, spec.source, index_path(out, spec.document), progress)
        studies, inventory = files.studies, files.summary
    else:
        studies, windowed = inventory_source(spec, progress)
        inventory = windowed.summary()
    reconciled = reconcile(spec.ris, studies, ris_inputs) if spec.ris and ris_inputs else None
    holdings = destination_holdings(spec, [s.study_uid for s in studies], progress)
    result = build_plan(
        spec,
        studies,
        holdings,
        created_at=created_at or utc_now(),
        reconciled=reconciled,
        inputs=inputs or None,
        inventory=inventory,
        source_holds=files.holds if files else None,
        quarantine=files.quarantine if files else (),
        duplicates=files.duplicates if files else (),
        patients=patients,
        order_values=order_values,
    )
    fp = write_plan(result, out)
    return PlanOutcome(plan=result, path=out, fingerprint=fp)


def show(plan_path: str | Path) -> tuple[Plan, Approval | None]:
    path = Path(plan_path)
    p = read_plan(path)
    return p, read_approval(path)


def review(plan_path: str | Path, out_path: str | Path) -> Path:
    """Write the change review of a plan: holds, matches and every correction, as HTML."""
    from dataclasses import asdict

    from pacsmig.plan.codec import atomic_write
    from pacsmig.report.review import render_review, review_context

    path = Path(plan_path)
    p = read_plan(path)
    approval = read_approval(path)
    fp = fingerprint(p)
    approval_doc = {**asdict(approval), "matches": approval.fingerprint == fp} if approval else None
    context = review_context(p, fingerprint=fp, generated_at=utc_now(), approval=approval_doc)
    out = Path(out_path)
    atomic_write(out, render_review(context))
    return out


def approve(plan_path: str | Path, by: str, note: str = "", *, auto: bool = False) -> Approval:
    path = Path(plan_path)
    if not by.strip():
        raise InputError("approve: --by must name the person signing off")
    p = read_plan(path)
    approval = Approval(
        fingerprint=fingerprint(p), by=by.strip(), at=utc_now(), note=note, auto=auto
    )
    write_approval(path, approval)
    return approval


def journal_path(plan_path: Path, p: Plan) -> Path:
    """The spec's `journal` (relative paths from the plan's folder) or beside the plan."""
    return journal_path_for(plan_path, p.header.spec)


def index_path(plan_path: Path, spec_document: dict[str, Any]) -> Path:
    """The file inventory's index (a filesystem source): SQLite beside the journal."""
    journal = journal_path_for(plan_path, spec_document)
    return journal.with_name(journal.name.removesuffix(".journal.sqlite") + ".index.sqlite")


def journal_path_for(plan_path: Path, spec_document: dict[str, Any]) -> Path:
    configured = spec_document.get("journal")
    if configured:
        candidate = Path(configured)
        return candidate if candidate.is_absolute() else plan_path.parent / candidate
    return plan_path.with_name(plan_path.name.removesuffix(".json") + ".journal.sqlite")


def open_journal(plan_path: str | Path) -> tuple[Plan, Journal]:
    path = Path(plan_path)
    p = read_plan(path)
    return p, Journal.open(journal_path(path, p))


def apply(
    plan_path: str | Path,
    *,
    auto_approve: bool = False,
    progress: ApplyProgress | None = None,
    stop: threading.Event | None = None,
) -> ApplyResult:
    """Apply a signed-off plan; returns partial progress too (failures are outcomes)."""
    path = Path(plan_path)
    p = read_plan(path)
    if auto_approve:
        approval = approve(path, by=f"{getpass.getuser()} (--auto-approve)", auto=True)
    else:
        approval = check_approval(path, p)
    jpath = journal_path(path, p)
    with run_lock(jpath), Journal.open(jpath) as journal:
        executor = Executor(
            p,
            journal,
            spool_root=jpath.with_name(jpath.name + ".spool"),
            approval={
                "by": approval.by,
                "at": approval.at,
                "note": approval.note,
                "auto": approval.auto,
            },
            progress=progress,
            stop=stop,
            index_path=index_path(path, p.header.spec),
        )
        return executor.run()


@contextlib.contextmanager
def run_lock(journal: Path) -> Iterator[None]:
    """One apply per journal at a time: two would send the same instances in parallel."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    lock_path = journal.with_name(journal.name + ".lock")
    key = str(lock_path.resolve())
    # POSIX locks do not exclude the process that holds them (and opening the file again
    # and closing it would drop the lock): apply runs in this process are counted here.
    with _HELD_LOCK:
        if key in _HELD:
            raise InputError(
                f"{journal}: another apply is running on this journal (pid {os.getpid()}); "
                "wait for it or stop it first"
            )
        _HELD.add(key)
    try:
        with _file_lock(journal, lock_path):
            yield
    finally:
        with _HELD_LOCK:
            _HELD.discard(key)


_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def _file_lock(journal: Path, lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+", encoding="utf-8") as fh:
        try:
            # A POSIX record lock belongs to this process alone: the sender processes forked
            # from it do not inherit it, so a killed apply's last workers cannot hold the
            # journal hostage (an flock would be shared with them).
            fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError(
                f"{journal}: another apply is running on this journal ({holder}); wait for it "
                "or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)


def verify(
    plan_path: str | Path,
    *,
    progress: VerifyProgress | None = None,
    levels: str | tuple[str, ...] | None = None,
    image_sample: str | float | int | None = None,
) -> VerifyResult:
    """Verify at the spec's levels, or these ("counts,images"); image_sample overrides the
    spec's per-study sample: a fraction ("0.05") or a number of instances ("5")."""
    from pacsmig.verify.levels import parse_image_sample, parse_levels

    chosen = parse_levels(levels) if isinstance(levels, str) else levels
    sample = parse_image_sample(image_sample) if isinstance(image_sample, str) else image_sample
    p, journal = open_journal(plan_path)
    with journal:
        return verify_plan(
            p,
            journal,
            progress,
            index_path=index_path(Path(plan_path), p.header.spec),
            levels=chosen,
            image_sample=sample,
        )


REPORT_FORMATS = ("html", "csv", "json")


def report(plan_path: str | Path, out_path: str | Path, *, fmt: str = "html") -> Path:
    """Write the migration report (HTML, CSV or JSON) for a plan and its journal."""
    from pacsmig.plan.codec import atomic_write
    from pacsmig.report.context import build_context
    from pacsmig.report.render import render_csv, render_html, render_json

    if fmt not in REPORT_FORMATS:
        raise InputError(
            f"report: unknown format {fmt!r}; expected one of {', '.join(REPORT_FORMATS)}"
        )
    path = Path(plan_path)
    p, journal = open_journal(path)
    with journal:
        context = build_context(p, journal, read_approval(path), generated_at=utc_now())
    text = {
        "html": lambda: render_html("report.html.j2", context),
        "csv": lambda: render_csv(context),
        "json": lambda: render_json(context),
    }[fmt]()
    out = Path(out_path)
    atomic_write(out, text)
    return out
