"""Terminal rendering with rich. DICOM values are printed as text, never as markup."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pacsmig.apply.executor import ApplyResult, ProgressEvent
from pacsmig.apply.schedule import Gate
from pacsmig.errors import PacsmigError
from pacsmig.plan.approval import Approval
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import REASONS, Plan, summarize
from pacsmig.plan.priority import describe_priority
from pacsmig.spec.load import spec_of_plan
from pacsmig.verify.counts import VerifyResult


def _n(value: int) -> str:
    return f"{value:,}"


@contextmanager
def status(console: Console, text: str) -> Iterator[Callable[[int, int], None]]:
    with console.status(text) as st:

        def tick(done: int, total: int) -> None:
            st.update(f"{text}: {done:,} of {total:,} studies")

        yield tick


def plan_summary(console: Console, plan: Plan, path: Path, fp: str) -> None:
    s = summarize(plan)
    console.print(
        f"[bold]Plan:[/] {_n(s.studies['migrate'])} studies ({_n(s.instances['migrate'])} instances) "
        f"to migrate, {_n(s.studies['skip'])} to skip, {_n(s.studies['hold'])} held for review."
    )
    for (action, reason), n in s.reasons.items():
        text = REASONS.get(reason, reason.replace("_", " "))
        inst = s.reason_instances.get((action, reason), 0)
        console.print(
            f"  {action:<8} {n:>8,} studies {inst:>10,} instances  {escape(text)} ({reason})",
            highlight=False,
        )
    console.print(inventory_line(plan), highlight=False)
    if plan.quarantine:
        console.print(
            f"[yellow]{len(plan.quarantine):,} files quarantined[/] (unreadable, truncated, or "
            "conflicting): listed by 'pacsmig show' and in the report."
        )
    console.print(f"Fingerprint {fp}", highlight=False)
    console.print(
        f"Wrote {escape(str(path))}. Review with 'pacsmig show {escape(str(path))}', then "
        f"'pacsmig approve {escape(str(path))} --by NAME'.",
        highlight=False,
    )


def inventory_line(plan: Plan) -> str:
    inv = plan.header.inventory
    if not inv:
        return "Inventory: one query."
    if inv.get("kind") == "filesystem":
        state = "complete" if inv.get("complete") else f"INCOMPLETE: {inv.get('note', '')}"
        return (
            f"Inventory ({state}): {inv.get('files_seen', 0):,} files seen "
            f"({inv.get('files_read', 0):,} read this time): {inv.get('instances', 0):,} instances, "
            f"{inv.get('duplicates', 0):,} identical copies, {inv.get('quarantined', 0):,} "
            f"quarantined, {inv.get('dicomdirs', 0):,} DICOMDIRs."
        )
    windows = len(inv.get("windows", [])) or 1
    how = f"{inv.get('queries', windows)} queries, {windows} windows"
    if inv.get("complete") is True:
        return f"Inventory: provably complete ({how})."
    if inv.get("complete") is False:
        return f"Inventory: NOT provably complete ({how}): {inv.get('note', '')}"
    return f"Inventory: completeness not proven: {inv.get('note', '')}"


def plan_table(console: Console, plan: Plan, approval: Approval | None) -> None:
    h = plan.header
    console.print(
        f"[bold]{escape(h.name)}[/]: {escape(h.source.ae_title)}@{escape(h.source.host)}:{h.source.port} "
        f"-> {escape(h.destination.ae_title)}@{escape(h.destination.host)}:{h.destination.port}, "
        f"planned {escape(h.created_at)}",
        highlight=False,
    )
    fp = fingerprint(plan)
    console.print(f"Fingerprint {fp}", highlight=False)
    console.print(inventory_line(plan), highlight=False)
    for line in order_lines(plan):
        console.print(escape(line), highlight=False)
    if approval is None:
        console.print("[yellow]Not signed off.[/]")
    elif approval.fingerprint == fp:
        auto = " (automatic)" if approval.auto else ""
        console.print(
            f"Signed off by {escape(approval.by)}{auto} at {escape(approval.at)}", highlight=False
        )
    else:
        console.print("[red]The sign-off is for a different plan: approve again after review.[/]")
    table = Table(show_lines=False, header_style="bold")
    for col in (
        "action",
        "reason",
        "patient ID",
        "patient name",
        "date",
        "accession",
        "modalities",
    ):
        table.add_column(col)
    table.add_column("series", justify="right")
    table.add_column("instances", justify="right")
    table.add_column("at dest.", justify="right")
    with_ris = any(a.match is not None for a in plan.actions)
    if with_ris:
        table.add_column("order (rule)")
        table.add_column("corrections")
    with_priority = any(a.priority for a in plan.actions)
    if with_priority:
        table.add_column("priority")
    with_route = any(a.route for a in plan.actions)
    if with_route:
        table.add_column("route")
    # A reviewer copies UIDs from here: never fold or crop them.
    uid_width = max((len(a.study_uid) for a in plan.actions), default=9)
    table.add_column("study UID", no_wrap=True, min_width=uid_width)
    style = {"hold": "yellow", "migrate": "", "skip": "dim"}
    for a in plan.actions:
        extra: list[str] = []
        if with_ris:
            m = a.match or {}
            order = (
                f"{m['order_id']} ({m.get('rule')})"
                if m.get("order_id")
                else ", ".join(m.get("candidates") or [])
            )
            extra = [escape(order), escape(", ".join(c.keyword for c in a.corrections))]
        if with_priority:
            extra.append(escape(a.priority))
        if with_route:
            extra.append(a.route + (f" ({a.transcode.split(':')[0]})" if a.transcode else ""))
        table.add_row(
            a.action,
            a.reason,
            escape(a.patient_id),
            escape(a.patient_name),
            escape(a.study_date),
            escape(a.accession),
            escape(" ".join(a.modalities)),
            _n(a.series_count),
            _n(a.instance_count),
            _n(a.found_at_destination),
            *extra,
            escape(a.study_uid),
            style=style[a.action],
        )
    console.print(table)
    if plan.quarantine:
        console.print(f"[bold]Quarantined files ({len(plan.quarantine):,}):[/] not migrated")
        for q in plan.quarantine:
            console.print(f"  {q.reason:<20} {escape(q.path)}  {escape(q.detail)}", highlight=False)
    if plan.duplicates:
        console.print(f"Identical copies ({len(plan.duplicates):,}): only the first path is sent")
        for d in plan.duplicates:
            console.print(f"  {escape(d.kept)} = {escape(d.other)}", highlight=False)
    s = summarize(plan)
    console.print(
        f"{_n(s.studies['migrate'])} to migrate ({_n(s.instances['migrate'])} instances), "
        f"{_n(s.studies['skip'])} to skip, {_n(s.studies['hold'])} held."
    )
    routes = Counter(a.route for a in plan.actions if a.action == "migrate")
    if routes:
        console.print(
            "Routes: "
            + ", ".join(f"{_n(n)} {route or 'unplanned'}" for route, n in sorted(routes.items()))
            + " (direct: the source moves the study to the destination; relay: through pacsmig)"
        )


def order_lines(plan: Plan) -> list[str]:
    """How apply will take the plan: the priority summary and the schedule, one line each."""
    if not plan.header.spec:
        return []
    try:
        spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
        schedule = Gate(spec.schedule).describe()
    except (PacsmigError, ValueError) as exc:  # show must still show the plan itself
        return [f"priority and schedule: unreadable ({exc})"]
    return [describe_priority(plan.actions, spec.priority), schedule]


@contextmanager
def apply_progress(console: Console) -> Iterator[Callable[[ProgressEvent], None]]:
    if not console.is_terminal:
        # Logs and scripts get the summary at the end, not frames of a progress bar.
        yield lambda ev: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    studies = progress.add_task("studies", total=None, rate="")
    instances = progress.add_task("instances", total=None, rate="")

    started = False

    def update(ev: ProgressEvent) -> None:
        # Start drawing on the first event, so an error before any work shows no empty bars.
        nonlocal started
        if not started:
            progress.start()
            started = True
        progress.update(studies, completed=ev.studies_done, total=ev.studies_total)
        task = progress.tasks[instances]
        elapsed = task.elapsed or 0.0
        rate = f"{ev.instances_done / elapsed:,.1f} inst/s" if elapsed > 0 else ""
        if ev.waiting:
            rate = ev.waiting
        progress.update(instances, completed=ev.instances_done, total=ev.instances_total, rate=rate)

    try:
        yield update
    finally:
        if started:
            progress.stop()


def apply_summary(console: Console, r: ApplyResult) -> None:
    direct = f" ({_n(r.sent_direct)} by the direct route)" if r.sent_direct else ""
    console.print(
        f"[bold]Apply:[/] {_n(r.sent)} instances sent{direct}, {_n(r.present)} already at the destination, "
        f"{_n(r.failed)} failed; {_n(r.studies_complete)} of {_n(r.studies_total)} studies complete"
        + (f", {_n(r.studies_refused)} refused" if r.studies_refused else "")
        + (f", {_n(r.studies_incomplete)} incomplete" if r.studies_incomplete else "")
        + "."
    )
    for reason, n in sorted(r.failure_reasons.items()):
        console.print(f"  failed: {n:,} instances: {reason}", highlight=False)
    for reason, n in sorted(r.refusal_reasons.items()):
        console.print(f"  refused: {n:,} studies: {reason}", highlight=False)
    if r.verification:
        others = ", ".join(
            f"{n:,} {status.replace('_', ' ')}"
            for status, n in sorted(r.verification.items())
            if status != "verified"
        )
        console.print(
            f"  verified during apply: {r.verified:,} of {sum(r.verification.values()):,} studies"
            + (f" ({others}: see 'pacsmig verify' and the report)" if others else ""),
            highlight=False,
        )
    if r.seconds > 0 and r.sent:
        # Bytes are counted only for what crossed pacsmig: a direct move's size is the PACS's.
        relayed = r.sent - r.sent_direct
        rate = f"  {r.sent / r.seconds:,.1f} instances/s over {r.seconds:,.1f} s"
        if relayed:
            rate += f"; relayed: {r.bytes_sent / r.seconds / 1e6:,.1f} MB/s"
        console.print(rate, highlight=False)
    if r.interrupted:
        console.print("Interrupted: run apply again to resume.")
    elif not r.ok:
        console.print("Some instances did not arrive: see 'pacsmig report'; apply again to retry.")


def verify_summary(console: Console, r: VerifyResult) -> None:
    bad = [c for c in r.checks if not c.ok]
    levels = sorted({lv for c in r.checks for lv in c.levels}, key=_LEVEL_ORDER.index)
    console.print(
        f"[bold]Verify{' (' + ', '.join(levels) + ')' if levels else ''}:[/] "
        f"{_n(len(r.checks) - len(bad))} of {_n(len(r.checks))} studies complete "
        f"at the destination; {_n(r.missing_instances)} instances missing.",
        highlight=False,
    )
    for c in bad:
        console.print(
            f"  {c.status}: study {escape(c.study_uid)}: expected {c.expected_instances}, "
            f"found {c.found_instances}" + (f" ({escape(c.note)})" if c.note else ""),
            highlight=False,
        )
        for d in c.attributes:
            console.print(
                f"    {d.keyword}: planned {escape(d.expected)!r}, found {escape(d.found)!r}",
                highlight=False,
            )
        for uid in c.missing[:50]:
            console.print(f"    missing {escape(uid)}", highlight=False)
        if len(c.missing) > 50:
            console.print(f"    ... and {len(c.missing) - 50} more (see the report)")
        if c.images is not None:
            for comparison in c.images.different[:20]:
                for diff in comparison.differences[:10]:
                    console.print(
                        f"    image {escape(comparison.sop_uid)}: {diff.tag} {escape(diff.keyword)}"
                        f": source {escape(diff.expected)!r}, destination {escape(diff.found)!r}",
                        highlight=False,
                    )
            for problem in c.images.errors[:20]:
                console.print(
                    f"    image {escape(problem.sop_uid)}: {escape(problem.reason)}",
                    highlight=False,
                )
        if c.commitment is not None and not c.commitment.ok:
            for failure in c.commitment.failed[:50]:
                console.print(
                    f"    not committed {escape(failure.sop_uid)}: {escape(failure.reason)}",
                    highlight=False,
                )


_LEVEL_ORDER = ("counts", "instances", "attributes", "images", "commitment")
