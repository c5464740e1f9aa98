"""apply under a schedule: it waits for the window, and keeps to the window's rate cap."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from pacsmig import api
from pacsmig.apply.executor import Executor
from pacsmig.apply.schedule import Gate
from pacsmig.journal.store import Journal
from pacsmig.plan.codec import read_plan
from pacsmig.spec.load import spec_of_plan
from pacsmig.testing.corpus import generate_corpus
from tests.integration.conftest import Site, run_cli
from tests.integration.helpers import sop_uid_of


def _planned(site: Site, schedule: str, studies: int = 2) -> tuple[Path, set[str]]:
    files = generate_corpus(site.work / "gen", studies=studies, per_series=5)
    for f in files:
        assert site.source.upload(f) is not None
    spec = site.spec("c-get", extra=schedule)
    plan = site.work / "plan.json"
    run_cli("plan", spec, "-o", plan, check=0)
    run_cli("approve", plan, "--by", "tester", check=0)
    return plan, {sop_uid_of(f) for f in files}


def test_apply_waits_for_the_window_then_runs(site: Site) -> None:
    """Outside the window nothing is retrieved; at the window's edge apply starts by itself.

    The gate runs on a fake clock that moves only when apply sleeps, so the test takes
    seconds, not the hours until tonight.
    """
    plan, expected = _planned(
        site, 'schedule:\n  timezone: UTC\n  windows:\n    - {start: "19:00", end: "07:00"}\n'
    )
    p = read_plan(plan)
    spec = spec_of_plan(p.header.spec, p.header.base_dir)
    now = [dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)]  # a Monday, noon: outside
    lock = threading.Lock()
    paused: list[dt.datetime] = []
    first_retrieval: list[dt.datetime] = []

    def clock() -> dt.datetime:
        with lock:
            return now[0]

    def sleep(seconds: float) -> None:
        with lock:
            now[0] += dt.timedelta(seconds=seconds)

    class RecordingGate(Gate):
        def throttle(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
            if not first_retrieval:
                first_retrieval.append(clock())
            return super().throttle(*args, **kwargs)  # type: ignore[arg-type]

    gate = RecordingGate(spec.schedule, clock=clock, sleep=sleep, on_pause=paused.append)
    jpath = api.journal_path(plan, p)
    with Journal.open(jpath) as journal:
        result = Executor(
            p,
            journal,
            spool_root=jpath.with_name("spool"),
            approval=None,
            gate=gate,
        ).run()

    assert result.ok and result.sent == len(expected)
    assert site.dest.sop_instance_uids() == expected
    opening = dt.datetime(2026, 3, 2, 19, 0, tzinfo=dt.UTC)
    assert paused and paused[0].astimezone(dt.UTC) == opening
    assert first_retrieval and first_retrieval[0] >= opening


def test_apply_keeps_to_the_rate_cap(site: Site) -> None:
    """Every retrieved instance is paid for at the gate, and the pace keeps to the cap.

    Paced at retrieval (that is what protects the source): the times are taken when the
    gate lets each received instance through, on the real clock.
    """
    cap = 8.0
    plan, expected = _planned(
        site, f"schedule:\n  windows:\n    - {{max_instances_per_second: {cap}}}\n", studies=3
    )
    p = read_plan(plan)
    spec = spec_of_plan(p.header.spec, p.header.base_dir)
    passed: list[float] = []

    class TimedGate(Gate):
        def throttle(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
            ok = super().throttle(*args, **kwargs)  # type: ignore[arg-type]
            passed.append(time.monotonic())
            return ok

    jpath = api.journal_path(plan, p)
    with Journal.open(jpath) as journal:
        result = Executor(
            p,
            journal,
            spool_root=jpath.with_name("spool"),
            approval=None,
            gate=TimedGate(spec.schedule),
        ).run()

    assert result.ok and result.sent == len(expected)
    assert site.dest.sop_instance_uids() == expected
    assert len(passed) == len(expected), "an instance was not paid for at the gate"
    span = passed[-1] - passed[0]
    # n instances at `cap`/s after a one-second burst take at least (n - cap) / cap seconds.
    assert span >= (len(passed) - cap) / cap * 0.95, (span, len(passed))
