"""How the report scales: 100,000 studies by default.

    python bench/report_bench.py                      # 100,000 studies, ~1M instances
    python bench/report_bench.py --studies 20000 --no-browser

Builds a synthetic plan and journal (outcomes mixed as a real migration's: mostly verified,
some missing, differing, failed, refused, held, skipped, not applied; sent events spread
over a day), then times `pacsmig report` (html, csv, json), the HTML file's size, and what a
reader waits for in headless Chromium (Debian's package, driven by playwright): the first
page of the studies table, a status filter, a free-text search and a drill-down.

The journal's instance and event rows are written with plain SQL in one transaction (the
Journal API commits per call, which would make the set-up the slowest part); studies and
verifications go through the Journal API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pacsmig.journal.store import FAILED, PRESENT, SENT, Journal  # noqa: E402
from pacsmig.plan.build import header_for  # noqa: E402
from pacsmig.plan.codec import fingerprint, write_plan  # noqa: E402
from pacsmig.plan.model import ExpectedSeries, Plan, StudyAction  # noqa: E402
from pacsmig.report.context import build_context  # noqa: E402
from pacsmig.report.render import render_html  # noqa: E402
from pacsmig.spec.load import spec_from_text  # noqa: E402

SPEC = """\
version: 1
name: bench
local: {ae_title: PACSMIG, port: 11113}
source: {kind: dimse, ae_title: LEGACY, host: 127.0.0.1, port: 4242, retrieve: c-get}
destination: {ae_title: NEWPACS, host: 127.0.0.1, port: 4243}
journal: bench.journal.sqlite
"""
# (outcome, weight): what a large migration's report looks like part way through its tail.
OUTCOMES = (
    ("verified", 880),
    ("missing", 30),
    ("attributes_differ", 10),
    ("images_differ", 5),
    ("not_committed", 5),
    ("failed", 10),
    ("refused", 5),
    ("held", 10),
    ("skipped", 10),
    ("already_complete", 10),
    ("not_applied", 10),
    ("unverified", 15),
)
MODALITIES = ("CT", "MR", "CR", "US", "DX", "MG", "PT", "NM")
T = TypeVar("T")


def timed(label: str, fn: Callable[[], T], results: dict[str, float]) -> T:
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    print(f"  {label:<38} {results[label]:8.2f} s", flush=True)
    return value


def build(work: Path, studies: int, seed: int) -> tuple[Path, dict[str, int]]:
    rng = random.Random(seed)
    kinds = [k for k, _ in OUTCOMES]
    weights = [w for _, w in OUTCOMES]
    actions: list[StudyAction] = []
    outcome: dict[str, str] = {}
    for i in range(studies):
        uid = f"1.2.826.0.1.3680043.10.999.{i}"
        kind = rng.choices(kinds, weights)[0]
        series = tuple(
            ExpectedSeries(
                series_uid=f"{uid}.{s}",
                modality=rng.choice(MODALITIES),
                number=str(s + 1),
                description=f"SERIES {s + 1}",
                instances=rng.choice((1, 1, 2, 3, 5, 8, 12, 20, 40)),
            )
            for s in range(rng.choice((1, 1, 2, 3, 4)))
        )
        action, reason = "migrate", "not_at_destination"
        if kind == "held":
            action, reason = "hold", "patient_id_conflict"
        elif kind == "skipped":
            action, reason = "skip", "empty_study"
        elif kind == "already_complete":
            action, reason = "skip", "already_complete"
        actions.append(
            StudyAction(
                study_uid=uid,
                action=action,  # type: ignore[arg-type]
                reason=reason,
                patient_id=f"PAT{i % (studies // 3 + 1):07d}",
                patient_name=f"PATIENT^{i % 997}^{i % 13}",
                birth_date="19700101",
                study_date=f"2019{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                accession=f"ACC{i:08d}",
                description=f"STUDY {kind.upper()} {i % 50}",
                modalities=tuple(sorted({s.modality for s in series})),
                series=series,
                route=rng.choice(("relay", "direct")) if action == "migrate" else "",
            )
        )
        outcome[uid] = kind
    spec = spec_from_text(SPEC, base_dir=work)
    plan = Plan(header=header_for(spec, "2026-01-01T00:00:00Z"), actions=tuple(actions))
    plan_path = work / "bench.plan.json"
    write_plan(plan, plan_path)
    fp = fingerprint(plan)

    journal_path = work / "bench.journal.sqlite"
    counts = {"instances": 0, "events": 0}
    with Journal.open(journal_path) as journal:
        apply_run = journal.start_run("apply", fp, {"by": "bench", "fingerprint": fp})
        verify_run = journal.start_run("verify", fp, None)
    start = dt.datetime(2026, 1, 2, 19, 0, tzinfo=dt.UTC)
    conn = sqlite3.connect(journal_path)
    inst_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    sent_n = 0
    for a in actions:
        kind = outcome[a.study_uid]
        if a.action != "migrate" or kind in ("not_applied", "refused"):
            continue
        for s in a.series:
            for k in range(s.instances):
                sop = f"{s.series_uid}.{k}"
                state = SENT
                reason, code, detail = "", 0, ""
                if kind == "failed" and k == 0:
                    state, reason, code, detail = (
                        FAILED,
                        "destination_unavailable",
                        0xA700,
                        "out of resources",
                    )
                elif rng.random() < 0.02:
                    state, reason = PRESENT, "already_at_destination"
                # ~1,000 instances a minute on nights: the timeline spans hours, in bursts.
                at = start + dt.timedelta(seconds=sent_n / 16 + (sent_n // 200_000) * 3600)
                stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                inst_rows.append(
                    (
                        sop,
                        a.study_uid,
                        s.series_uid,
                        "1.2.840.10008.5.1.4.1.1.2",
                        state,
                        code,
                        reason,
                        detail,
                        1,
                        stamp,
                        apply_run,
                    )
                )
                if state != PRESENT:
                    event_rows.append(
                        (
                            stamp,
                            apply_run,
                            sop,
                            state if not reason else f"{state}:{reason}",
                            code,
                            detail,
                        )
                    )
                    sent_n += 1
    with conn:
        conn.executemany(
            "INSERT INTO instances(sop_uid, study_uid, series_uid, sop_class_uid, state, code, reason, "
            "detail, attempts, updated_at, run_id) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            inst_rows,
        )
        conn.executemany(
            "INSERT INTO events(at, run_id, sop_uid, kind, code, detail) VALUES(?,?,?,?,?,?)",
            event_rows,
        )
    conn.close()
    counts["instances"], counts["events"] = len(inst_rows), len(event_rows)

    with Journal.open(journal_path) as journal:
        for a in actions:
            kind = outcome[a.study_uid]
            if a.action == "migrate" and kind == "refused":
                journal.set_study(
                    apply_run, a.study_uid, "refused", "source_changed", "2 instances more"
                )
            elif a.action == "migrate" and kind != "not_applied":
                failed = kind == "failed"
                journal.set_study(
                    apply_run,
                    a.study_uid,
                    "incomplete" if failed else "transferred",
                    "instances_failed" if failed else "",
                )
        for a in actions:
            kind = outcome[a.study_uid]
            status = {"already_complete": "verified"}.get(kind, kind)
            if status not in (
                "verified",
                "missing",
                "attributes_differ",
                "images_differ",
                "not_committed",
            ):
                continue
            journal.record_verification(
                verify_run, a.study_uid, status, a.instance_count, *_detail(a, status)
            )
        journal.finish_run(apply_run, "ok")
        journal.finish_run(verify_run, "mismatch")
    return plan_path, counts


def _detail(a: StudyAction, status: str) -> tuple[int, dict[str, Any]]:
    series = []
    for n, s in enumerate(a.series):
        missing = [f"{s.series_uid}.0"] if status == "missing" and n == 0 else []
        series.append(
            {
                "series_uid": s.series_uid,
                "expected": s.instances,
                "found": s.instances - len(missing),
                "missing": missing,
            }
        )
    found = sum(s["found"] for s in series)
    detail: dict[str, Any] = {
        "status": status,
        "expected_instances": a.instance_count,
        "found_instances": found,
        "series": series,
        "extra_instances": 0,
        "attributes": [
            {"keyword": "PatientName", "expected": a.patient_name, "found": "OTHER^NAME"}
        ]
        if status == "attributes_differ"
        else [],
        "note": "",
        "levels": ["counts", "instances", "attributes"],
    }
    if status == "images_differ":
        detail["images"] = {
            "sampled": 2,
            "equal": 1,
            "different": [
                {
                    "sop_uid": f"{a.series[0].series_uid}.0",
                    "differences": [
                        {
                            "tag": "(7FE0,0010)",
                            "keyword": "PixelData",
                            "expected": "sha256 1a2b",
                            "found": "sha256 9f8e",
                        }
                    ],
                }
            ],
            "errors": [],
        }
    if status == "not_committed":
        detail["commitment"] = {
            "requested": a.instance_count,
            "committed": a.instance_count - 1,
            "failed": [{"sop_uid": f"{a.series[0].series_uid}.0", "reason": "0x0110"}],
            "timed_out": False,
        }
    return found, detail


def cli_report(plan_path: Path, out: Path, fmt: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `pacsmig report` in a child process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pacsmig",
            "report",
            str(plan_path),
            "-o",
            str(out),
            "--format",
            fmt,
        ],
        env=env,
    )
    # VmHWM of the child's own address space (ru_maxrss would carry this process's peak
    # across fork and exec).
    peak_kb = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(f"pacsmig report --format {fmt} exited {proc.returncode}")
    return time.perf_counter() - start, peak_kb / 1024


def browser(report: Path, results: dict[str, float], accession: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = b.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        start = time.perf_counter()
        page.goto(report.as_uri(), wait_until="commit", timeout=300_000)
        page.wait_for_selector("#studies tbody tr.study", timeout=300_000)
        results["browser: first table page shown"] = time.perf_counter() - start
        page.wait_for_load_state("load")
        results["browser: load event"] = time.perf_counter() - start
        for label, action in (
            ("browser: filter to 'missing'", lambda: page.select_option("#f-status", "missing")),
            ("browser: search one accession", lambda: page.fill("#f-text", accession)),
        ):
            before = page.inner_text("#f-count")
            t = time.perf_counter()
            action()
            page.wait_for_function(
                "b => document.getElementById('f-count').textContent !== b", arg=before
            )
            results[label] = time.perf_counter() - t
            page.select_option("#f-status", "")
        t = time.perf_counter()
        page.click("#studies tbody tr.study")
        page.wait_for_selector("tr.drill")
        results["browser: open a drill-down"] = time.perf_counter() - t
        heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
        b.close()
    for k in (
        "browser: first table page shown",
        "browser: load event",
        "browser: filter to 'missing'",
        "browser: search one accession",
        "browser: open a drill-down",
    ):
        print(f"  {k:<38} {results[k]:8.2f} s")
    print(f"  {'browser: JS heap used':<38} {heap / 1e6:8.1f} MB")
    if errors:
        print(f"  console errors: {errors[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results: dict[str, float] = {}
        print(f"{args.studies:,} studies", flush=True)
        plan_path, counts = timed(
            "build plan + journal (set-up)", lambda: build(work, args.studies, args.seed), results
        )
        print(f"  {counts['instances']:,} instance rows, {counts['events']:,} events")
        from pacsmig.api import open_journal

        plan, journal = open_journal(plan_path)
        with journal:
            context = timed(
                "context", lambda: build_context(plan, journal, None, generated_at="bench"), results
            )
        html = timed("render html", lambda: render_html("report.html.j2", context), results)
        del html
        out = work / "report.html"
        # The CLI as users run it, in a child process: its own time and peak memory.
        for fmt, path in (("html", out), ("csv", work / "r.csv"), ("json", work / "r.json")):
            seconds, rss = cli_report(plan_path, path, fmt)
            results[f"pacsmig report --format {fmt}"] = seconds
            print(
                f"  {'pacsmig report --format ' + fmt:<38} {seconds:8.2f} s, peak RSS {rss:.0f} MB"
            )
        for name in ("report.html", "r.csv", "r.json"):
            print(f"  {name + ' size':<38} {(work / name).stat().st_size / 1e6:8.1f} MB")
        if not args.no_browser:
            browser(out, results, f"ACC{args.studies // 2:08d}")


if __name__ == "__main__":
    main()
