"""pacsmig commands. Each parses, calls pacsmig.api, renders, and picks the exit code.

Exit codes: 0 ok; 1 something failed or is missing (details in the journal and report);
2 invalid input (spec, plan, usage); 3 plan not signed off or changed since; 4 a PACS could
not be reached or refused us; 130 interrupted (progress is kept; run the command again).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from pacsmig import __version__, api
from pacsmig.cli import render
from pacsmig.errors import PacsmigError

app = typer.Typer(
    name="pacsmig",
    help="Plan, review, sign off, apply and verify a PACS-to-PACS migration.",
    no_args_is_help=True,
    add_completion=False,
    # Locals may hold patient data: never print them in a traceback.
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
)
# Redirected output (files, CI logs, scripts) gets a wide console so tables are not folded.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except PacsmigError as exc:
        _fail(str(exc).replace("[", "\\["), exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted: progress so far is kept in the journal; run the command again")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if os.environ.get("PACSMIG_DEBUG"):
            raise
        _fail(f"internal error {type(exc).__name__} (set PACSMIG_DEBUG=1 for a traceback)", 1)


def _version(value: bool) -> None:
    if value:
        out.print(f"pacsmig {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output")
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version")
    ] = False,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # pacsmig turns pynetdicom's failures into its own one-line errors; its log lines would
    # only repeat them (and at INFO and below they can carry identifiers).
    pynetdicom_level = {0: logging.CRITICAL, 1: logging.WARNING}.get(verbose, logging.INFO)
    logging.getLogger("pynetdicom").setLevel(pynetdicom_level)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="The migration spec (YAML)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the plan (JSON)")],
) -> None:
    """Inventory source and destination and write a reviewable plan."""
    with _errors(), render.status(err, "Querying the source and destination") as tick:
        result = api.plan(spec, output, progress=tick)
    render.plan_summary(out, result.plan, result.path, result.fingerprint)


@app.command()
def show(
    plan_file: Annotated[
        Path, typer.Argument(metavar="PLAN", help="A plan written by 'pacsmig plan'")
    ],
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the change review (holds, matches, corrections)"),
    ] = None,
) -> None:
    """Show a plan as a table, holds first."""
    with _errors():
        p, approval = api.show(plan_file)
        if html is not None:
            api.review(plan_file, html)
    render.plan_table(out, p, approval)
    if html is not None:
        out.print(f"Change review written to {html}", highlight=False)


@app.command()
def approve(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
    by: Annotated[str, typer.Option("--by", help="Who signs off (name or ID)")],
    note: Annotated[str, typer.Option("--note", help="Sign-off note, e.g. a change ticket")] = "",
) -> None:
    """Sign off a plan; the sign-off is bound to its fingerprint."""
    with _errors():
        approval = api.approve(plan_file, by, note)
    out.print(f"Plan {plan_file} approved by {approval.by} at {approval.at}", highlight=False)
    out.print(f"Fingerprint {approval.fingerprint}", highlight=False)


@app.command()
def apply(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Sign off automatically (recorded as such)")
    ] = False,
) -> None:
    """Apply a signed-off plan: retrieve, send, and journal every instance."""
    stop = threading.Event()
    with _errors(), _sigterm_as_interrupt(), render.apply_progress(err) as on_progress:
        result = api.apply(plan_file, auto_approve=auto_approve, progress=on_progress, stop=stop)
    render.apply_summary(out, result)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def verify(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
    levels: Annotated[
        str | None,
        typer.Option(
            "--levels",
            help="Comma-separated: counts, instances, attributes, images, commitment "
            "(default: the spec's verify.levels)",
        ),
    ] = None,
    image_sample: Annotated[
        str | None,
        typer.Option(
            "--image-sample",
            help="Instances compared per study (images level): a fraction (0.05) or a count (5)",
        ),
    ] = None,
) -> None:
    """Check the destination against the plan at the chosen verification levels."""
    with _errors(), render.status(err, "Verifying at the destination") as tick:
        result = api.verify(plan_file, progress=tick, levels=levels, image_sample=image_sample)
    render.verify_summary(out, result)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def report(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report file to write")],
    fmt: Annotated[str, typer.Option("--format", help="html, csv or json")] = "html",
) -> None:
    """Write the migration report from the plan and its journal."""
    with _errors():
        path = api.report(plan_file, output, fmt=fmt)
    out.print(f"Report written to {path}", highlight=False)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    try:
        app()
    except SystemExit:
        raise
