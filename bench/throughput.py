"""Migration throughput: pacsmig against the DCMTK tools, same corpus, same Orthanc peers.

    python bench/throughput.py                      # 1,000 CT-like 0.5 MB + 2,000 small, 3 runs
    python bench/throughput.py --quick              # tiny corpus, one run: a smoke test
    python bench/throughput.py --nagle --parallel 2 --associations 2 --only c,d,send

Builds (once; cached under --workdir) a corpus of CT-like 512x512 instances (about 0.5 MB)
and 64x64 ones (about 10 KB) across --studies studies, loads it into a source Orthanc (also
cached), and times, each from an empty destination Orthanc:

  (a) the DCMTK relay: movescu of each study to storescp, then storescu of what arrived to the
      destination (the two legs one after the other, summed),
  (b) movescu of each study from the source straight to the destination (-aem),
  (c) pacsmig apply with destination.route: relay (plan and approve are timed apart),
  (d) pacsmig apply with destination.move_ae and route: direct,

then prints instances/s, MB/s, wall time and CPU ms per instance (the client: DCMTK tools or
pacsmig apply; and each Orthanc), the ratios c/a (target >= 1.0: overlap beats a sequential
relay) and d/b (target >= 0.95), and a send-only table: pacsmig against storescu into
`storescp --ignore` with 1 and 4 associations. After every scenario the destination is read
back through Orthanc's REST API and must hold exactly the corpus's SOP Instance UIDs: a
scenario that lost or invented data is reported as such and gets no ratio (exit status 1).

--nagle repeats everything with Nagle's algorithm on at the peers (TCP_NODELAY=0 in the
environment of Orthanc and the DCMTK tools; pacsmig always sets TCP_NODELAY itself) on a
subset of the corpus (--nagle-sample instances), since every round trip then stalls.

A benchmark, not a test: 2 shared cores are noisy; read the median of --runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pacsmig.testing.corpus import generate_study  # noqa: E402
from pacsmig.testing.servers import (  # noqa: E402
    LOOPBACK,
    OrthancServer,
    StoreSCPServer,
    dcmtk_tool,
    free_port,
    stop_servers,
)

SOURCE_AET = "LEGACY"
DEST_AET = "NEWPACS"
RELAY_AET = "RELAY"
PACSMIG_AET = "PACSMIG"
SINK_AET = "STORESCP"
SCENARIOS = ("a", "b", "c", "d")
TITLES = {
    "a": "(a) DCMTK relay",
    "b": "(b) movescu direct",
    "c": "(c) pacsmig relay",
    "d": "(d) pacsmig direct",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- #
# corpus
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Study:
    uid: str
    date: str  # YYYYMMDD, one study per day: a date range selects a prefix of the corpus
    kind: str  # "ct" (512x512) or "small" (64x64)
    files: tuple[Path, ...]
    sop_uids: frozenset[str]
    nbytes: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Corpus:
    root: Path
    studies: tuple[Study, ...]

    @property
    def files(self) -> list[Path]:
        return [f for s in self.studies for f in s.files]

    @property
    def sop_uids(self) -> frozenset[str]:
        return frozenset().union(*(s.sop_uids for s in self.studies))

    @property
    def count(self) -> int:
        return sum(len(s.files) for s in self.studies)

    @property
    def megabytes(self) -> float:
        return sum(s.nbytes for s in self.studies) / 1e6

    def prefix(self, instances: int) -> Corpus:
        """The first studies by date holding at least ``instances`` instances."""
        chosen: list[Study] = []
        for study in self.studies:
            if sum(len(s.files) for s in chosen) >= instances:
                break
            chosen.append(study)
        return Corpus(root=self.root, studies=tuple(chosen))

    def of_kind(self, kind: str) -> list[Path]:
        return [f for s in self.studies if s.kind == kind for f in s.files]

    def describe(self) -> str:
        kinds = Counter(s.kind for s in self.studies)
        per = Counter({s.kind: 0 for s in self.studies})
        for s in self.studies:
            per[s.kind] += len(s.files)
        parts = ", ".join(f"{per[k]:,} {k} in {kinds[k]} studies" for k in sorted(kinds))
        return f"{self.count:,} instances, {self.megabytes:,.1f} MB ({parts})"


def _split(total: int, parts: int) -> list[int]:
    if parts <= 0:
        return []
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def build_corpus(cache: Path, ct: int, small: int, studies: int) -> Corpus:
    """Generate (or reuse) the corpus; the manifest is written last, so its presence marks done."""
    root = cache / f"corpus-ct{ct}-small{small}-studies{studies}"
    manifest = root / "manifest.json"
    if not manifest.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        total = max(1, ct + small)
        k_ct = min(ct, max(1 if ct else 0, round(studies * ct / total)))
        k_small = min(small, max(1 if small else 0, studies - k_ct))
        plans = [("ct", n) for n in _split(ct, k_ct)]
        smalls = [("small", n) for n in _split(small, k_small)]
        # Interleaved, so that a prefix by date (the --nagle subset) holds both kinds.
        order: list[tuple[str, int]] = []
        while plans or smalls:
            if plans:
                order.append(plans.pop(0))
            if smalls:
                order.append(smalls.pop(0))
        records = []
        for index, (kind, count) in enumerate(order):
            # Up to 4 series of equal length, so that the count is exact.
            n_series = next(d for d in (4, 3, 2, 1) if count % d == 0)
            date = f"2020{1 + index // 28:02d}{1 + index % 28:02d}"
            if index >= 12 * 28:
                raise SystemExit("--studies: at most 336 (one study per day of 2020)")
            size = 512 if kind == "ct" else 64
            paths = generate_study(
                root / "files",
                patient_id=f"BENCH{index // 2:05d}",
                patient_name=f"BENCH^PATIENT{index // 2}",
                n_series=n_series,
                per_series=count // n_series,
                modality="CT" if kind == "ct" or index % 4 == 1 else "MR",
                rows=size,
                cols=size,
                seed=index,
                study_date=date,
                accession=f"BENCH{index:07d}",
            )
            study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
            sops = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
            records.append(
                {
                    "uid": study_uid,
                    "date": date,
                    "kind": kind,
                    "files": [str(p.relative_to(root)) for p in paths],
                    "sop_uids": sops,
                    "nbytes": sum(p.stat().st_size for p in paths),
                }
            )
        manifest.write_text(json.dumps({"studies": records}))
        print(f"generated the corpus in {time.perf_counter() - t0:.1f} s under {root}")
    else:
        print(f"reusing the corpus under {root}")
    doc = json.loads(manifest.read_text())
    return Corpus(
        root=root,
        studies=tuple(
            Study(
                uid=r["uid"],
                date=r["date"],
                kind=r["kind"],
                files=tuple(root / f for f in r["files"]),
                sop_uids=frozenset(r["sop_uids"]),
                nbytes=r["nbytes"],
            )
            for r in doc["studies"]
        ),
    )


# --------------------------------------------------------------------------- #
# processes and CPU
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Proc:
    returncode: int
    wall: float
    cpu: float  # user + system seconds of the process and its reaped children


def dcmtk_env(nodelay: bool) -> dict[str, str]:
    # "0" rather than unset: a DCMTK built without DONT_DISABLE_NAGLE_ALGORITHM
    # turns Nagle off unless told "0".
    return {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}


def start(cmd: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        out.write(f"\n===== {' '.join(cmd[:6])} ...\n".encode())
        out.flush()
        return subprocess.Popen(
            list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for one child and return its exit code and CPU seconds (its own rusage)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run_all(cmds: Sequence[Sequence[str]], env: dict[str, str], log: Path) -> Proc:
    """Run commands at once; wall time until the last ends, CPU summed, worst exit code."""
    t0 = time.perf_counter()
    procs = [start(cmd, env, log) for cmd in cmds]
    results = [reap(p) for p in procs]
    wall = time.perf_counter() - t0
    code = next((rc for rc, _ in results if rc != 0), 0)
    return Proc(returncode=code, wall=wall, cpu=sum(cpu for _, cpu in results))


def run(cmd: Sequence[str], env: dict[str, str], log: Path) -> Proc:
    return run_all([cmd], env, log)


def server_cpu(server: OrthancServer | StoreSCPServer | None) -> float:
    """CPU seconds a running server (and its reaped children) used so far, from /proc."""
    if server is None or server.pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{server.pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rfind(")") + 2 :].split()
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted from "state" = 3.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def self_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def log_tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------- #
# the peers
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(slots=True, kw_only=True)
class Site:
    source: OrthancServer
    dest: OrthancServer
    scratch: Path
    nodelay: bool = True

    def set_nagle(self, nodelay: bool) -> None:
        if nodelay == self.nodelay:
            return
        stop_servers(self.source, self.dest)
        for server in (self.source, self.dest):
            server.tcp_nodelay = nodelay
            server.start()
        self.nodelay = nodelay


@contextlib.contextmanager
def site(cache: Path, corpus: Corpus, scratch: Path) -> Iterator[Site]:
    dest = OrthancServer(scratch / "dest", aet=DEST_AET)
    # The loaded source is cached beside the corpus: loading 1 GB takes a while.
    source = OrthancServer(
        corpus.root.with_name(corpus.root.name + "-source"),
        aet=SOURCE_AET,
        modalities={DEST_AET: (DEST_AET, LOOPBACK, dest.dicom_port)},
    )
    try:
        source.start()
        dest.start()
        load_source(source, corpus, scratch)
        yield Site(source=source, dest=dest, scratch=scratch)
    finally:
        stop_servers(source, dest)


def load_source(source: OrthancServer, corpus: Corpus, scratch: Path) -> None:
    if source.sop_instance_uids() == corpus.sop_uids:
        print(f"reusing the loaded source Orthanc ({corpus.count:,} instances)")
        return
    source.clear()
    t0 = time.perf_counter()
    cmd = [dcmtk_tool("storescu"), "-R", "-nh", "+sd", "+r", "-aet", "LOADER"]
    cmd += ["-aec", SOURCE_AET, LOOPBACK, str(source.dicom_port), str(corpus.root / "files")]
    run(cmd, dcmtk_env(True), scratch / "load.log")
    held = source.sop_instance_uids()
    if held != corpus.sop_uids:
        raise SystemExit(
            f"loading the source failed: it holds {len(held)} of {corpus.count} instances"
            f" (log {scratch / 'load.log'})"
        )
    print(f"loaded the source Orthanc in {time.perf_counter() - t0:.1f} s")


def empty_destination(dest: OrthancServer) -> None:
    dest.clear()
    if dest.instance_count() != 0:
        raise SystemExit("could not empty the destination Orthanc")


def destination_problem(dest: OrthancServer, expected: frozenset[str]) -> str:
    held = dest.sop_instance_uids()
    missing, extra = expected - held, held - expected
    if not missing and not extra:
        return ""
    return (
        f"DATA LOSS: the destination holds {len(held)} instances,"
        f" {len(missing)} of the {len(expected)} expected are missing, {len(extra)} unexpected"
    )


def route_seen(dest: OrthancServer, sample: int = 12) -> str:
    """Who sent the instances, by Orthanc's RemoteAET metadata: the source (direct) or us."""
    seen: Counter[str] = Counter()
    for ident in dest.rest_get(f"/instances?since=0&limit={sample}") or []:
        with contextlib.suppress(Exception):
            seen[dest.rest_get_bytes(f"/instances/{ident}/metadata/RemoteAET").decode()] += 1
    if set(seen) == {SOURCE_AET}:
        return "direct"
    if set(seen) == {PACSMIG_AET}:
        return "relay"
    return ",".join(f"{aet}x{n}" for aet, n in sorted(seen.items())) or "?"


# --------------------------------------------------------------------------- #
# migration scenarios
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    wall: float
    client_cpu: float  # the DCMTK tools of (a)/(b), pacsmig apply in (c)/(d)
    source_cpu: float
    dest_cpu: float
    legs: tuple[tuple[str, float], ...] = ()
    plan_wall: float | None = None
    route: str = ""
    plan_routes: str = ""
    problem: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    runs: int
    retrieve: str
    parallel: int | None
    associations: int | None
    keep: bool


def movescu_cmd(site: Site, study: Study, destination: str) -> list[str]:
    cmd = [dcmtk_tool("movescu"), "-S", "-aet", "MOVESCU", "-aec", SOURCE_AET]
    cmd += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}"]
    cmd += ["-aem", destination, LOOPBACK, str(site.source.dicom_port)]
    return cmd


def move_studies(site: Site, corpus: Corpus, destination: str, log: Path) -> Proc:
    """One movescu per study, one after the other: what an administrator's script does."""
    env = dcmtk_env(site.nodelay)
    wall = cpu = 0.0
    for study in corpus.studies:
        proc = run(movescu_cmd(site, study, destination), env, log)
        wall, cpu = wall + proc.wall, cpu + proc.cpu
        if proc.returncode != 0:
            return Proc(returncode=proc.returncode, wall=wall, cpu=cpu)
    return Proc(returncode=0, wall=wall, cpu=cpu)


def scenario_a(site: Site, corpus: Corpus, work: Path) -> Sample:
    relay = StoreSCPServer(work / "storescp", aet=RELAY_AET, tcp_nodelay=site.nodelay)
    site.source.add_modality(RELAY_AET, RELAY_AET, LOOPBACK, relay.port)
    log = work / "dcmtk.log"
    src0, dst0 = server_cpu(site.source), server_cpu(site.dest)
    with relay:
        moved = move_studies(site, corpus, RELAY_AET, log)
    if moved.returncode != 0:
        return failed(moved, f"movescu exited {moved.returncode}: {log_tail(log)}")
    received = relay.received_sop_instance_uids()
    if received != corpus.sop_uids:
        return failed(moved, f"DATA LOSS: storescp received {len(received)} of {corpus.count}")
    cmd = [dcmtk_tool("storescu"), "-R", "-nh", "+sd", "-aet", RELAY_AET, "-aec", DEST_AET]
    cmd += [LOOPBACK, str(site.dest.dicom_port), str(relay.output_dir)]
    sent = run(cmd, dcmtk_env(site.nodelay), log)
    src1, dst1 = server_cpu(site.source), server_cpu(site.dest)
    if not site.source.running or not site.dest.running:
        raise SystemExit("an Orthanc died during scenario (a)")
    shutil.rmtree(relay.output_dir, ignore_errors=True)
    return Sample(
        wall=moved.wall + sent.wall,
        client_cpu=moved.cpu + sent.cpu,
        source_cpu=src1 - src0,
        dest_cpu=dst1 - dst0,
        legs=(("movescu->storescp", moved.wall), ("storescu->dest", sent.wall)),
        problem="" if sent.returncode == 0 else f"storescu exited {sent.returncode}",
    )


def scenario_b(site: Site, corpus: Corpus, work: Path) -> Sample:
    log = work / "dcmtk.log"
    src0, dst0 = server_cpu(site.source), server_cpu(site.dest)
    moved = move_studies(site, corpus, DEST_AET, log)
    src1, dst1 = server_cpu(site.source), server_cpu(site.dest)
    return Sample(
        wall=moved.wall,
        client_cpu=moved.cpu,
        source_cpu=src1 - src0,
        dest_cpu=dst1 - dst0,
        problem="" if moved.returncode == 0 else f"movescu exited {moved.returncode}",
    )


def failed(proc: Proc, problem: str) -> Sample:
    nan = float("nan")
    return Sample(
        wall=proc.wall, client_cpu=proc.cpu, source_cpu=nan, dest_cpu=nan, problem=problem
    )


def pacsmig_spec(
    site: Site, corpus: Corpus, opts: Options, *, route: str, local_port: int, partial: bool
) -> dict[str, Any]:
    source: dict[str, Any] = {
        "kind": "dimse",
        "ae_title": SOURCE_AET,
        "host": LOOPBACK,
        "port": site.source.dicom_port,
        "retrieve": opts.retrieve,
        "timeout": 120,
    }
    destination: dict[str, Any] = {
        "ae_title": DEST_AET,
        "host": LOOPBACK,
        "port": site.dest.dicom_port,
        "route": route,
        "timeout": 120,
    }
    if route == "direct":
        destination["move_ae"] = DEST_AET
    if opts.parallel is not None:
        source["parallel"] = opts.parallel
    if opts.associations is not None:
        destination["associations"] = opts.associations
    spec: dict[str, Any] = {
        "version": 1,
        "name": "throughput-bench",
        "local": {"ae_title": PACSMIG_AET, "port": local_port, "bind": LOOPBACK},
        "source": source,
        "destination": destination,
    }
    if partial:
        dates = [s.date for s in corpus.studies]
        spec["select"] = {"study_date": {"from": min(dates), "to": max(dates)}}
    return spec


def pacsmig_env() -> dict[str, str]:
    # The working tree, not the venv's installed copy: the bench measures the code being written.
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def scenario_pacsmig(
    site: Site, corpus: Corpus, work: Path, opts: Options, *, route: str, partial: bool
) -> Sample:
    local_port = free_port()
    site.source.add_modality(PACSMIG_AET, PACSMIG_AET, LOOPBACK, local_port)
    spec = work / "spec.yaml"
    spec.write_text(
        json.dumps(
            pacsmig_spec(site, corpus, opts, route=route, local_port=local_port, partial=partial),
            indent=2,
        )
    )
    plan, log, env = work / "plan.json", work / "pacsmig.log", pacsmig_env()
    cli = [sys.executable, "-m", "pacsmig"]
    planned = run([*cli, "plan", str(spec), "-o", str(plan)], env, log)
    if planned.returncode != 0:
        return failed(planned, f"pacsmig plan exited {planned.returncode}: {log_tail(log)}")
    actions = json.loads(plan.read_text())["actions"]
    kinds = Counter(a["action"] for a in actions)
    if kinds != Counter({"migrate": len(corpus.studies)}):
        return failed(planned, f"plan is not {len(corpus.studies)} x migrate: {dict(kinds)}")
    routes = Counter(a.get("route", "?") for a in actions)
    plan_routes = ",".join(f"{k}x{n}" for k, n in sorted(routes.items()))
    approved = run([*cli, "approve", str(plan), "--by", "bench"], env, log)
    if approved.returncode != 0:
        return failed(approved, f"pacsmig approve exited {approved.returncode}: {log_tail(log)}")
    src0, dst0 = server_cpu(site.source), server_cpu(site.dest)
    applied = run([*cli, "apply", str(plan)], env, log)
    src1, dst1 = server_cpu(site.source), server_cpu(site.dest)
    problem = ""
    if applied.returncode != 0:
        problem = f"pacsmig apply exited {applied.returncode}: {log_tail(log)}"
    return Sample(
        wall=applied.wall,
        client_cpu=applied.cpu,
        source_cpu=src1 - src0,
        dest_cpu=dst1 - dst0,
        plan_wall=planned.wall,
        plan_routes=plan_routes,
        problem=problem,
    )


def run_migrations(
    site: Site, corpus: Corpus, opts: Options, only: set[str], *, partial: bool
) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {k: [] for k in SCENARIOS if k in only}
    expected = corpus.sop_uids
    source_count = site.source.instance_count()
    for run_index in range(opts.runs):
        # Interleaved, so that a noisy minute hurts every scenario alike.
        for key in results:
            work = site.scratch / f"{'nodelay' if site.nodelay else 'nagle'}-{key}-{run_index}"
            work.mkdir(parents=True)
            empty_destination(site.dest)
            if key == "a":
                sample = scenario_a(site, corpus, work)
            elif key == "b":
                sample = scenario_b(site, corpus, work)
            else:
                route = "relay" if key == "c" else "direct"
                sample = scenario_pacsmig(site, corpus, work, opts, route=route, partial=partial)
            problem = sample.problem or destination_problem(site.dest, expected)
            if site.source.instance_count() != source_count:
                problem = problem or "the source changed during the scenario"
            sample = dataclasses.replace(sample, problem=problem, route=route_seen(site.dest))
            results[key].append(sample)
            status = (
                f"FAILED: {problem}" if problem else f"{corpus.count / sample.wall:8.1f} inst/s"
            )
            print(f"  run {run_index + 1}/{opts.runs} {TITLES[key]:20} {status}", flush=True)
            if not opts.keep:
                shutil.rmtree(work, ignore_errors=True)
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms_per(seconds: float, count: int) -> str:
    return "-" if seconds != seconds else f"{1000 * seconds / count:.2f}"  # NaN check


def print_migrations(title: str, corpus: Corpus, results: dict[str, list[Sample]]) -> bool:
    """Print the scenario table and ratios; True if every scenario kept every instance."""
    n, mb = corpus.count, corpus.megabytes
    print(f"\n{title}\ncorpus: {corpus.describe()}, {len(corpus.studies)} studies")
    head = f"{'scenario':22}{'inst/s':>9}{'MB/s':>8}{'wall s':>9}"
    head += f"{'client CPU':>12}{'source CPU':>12}{'dest CPU':>10}  (CPU: ms/instance)"
    print(head)
    walls: dict[str, float] = {}
    clean = True
    for key, samples in results.items():
        bad = [s for s in samples if s.problem]
        if bad:
            clean = False
            print(
                f"{TITLES[key]:22}  FAILED in {len(bad)} of {len(samples)} runs: {bad[0].problem}"
            )
            continue
        wall = walls[key] = median([s.wall for s in samples])
        cpu = [
            median([getattr(s, f) for s in samples])
            for f in ("client_cpu", "source_cpu", "dest_cpu")
        ]
        extra = []
        if samples[0].plan_wall is not None:
            extra.append(f"plan {median([s.plan_wall or 0.0 for s in samples]):.1f} s")
        if samples[0].plan_routes:
            extra.append(f"plan routes {samples[0].plan_routes}")
        if key in "cd":
            extra.append(f"arrived by {samples[0].route}")
        print(
            f"{TITLES[key]:22}{n / wall:9.1f}{mb / wall:8.1f}{wall:9.2f}"
            f"{ms_per(cpu[0], n):>12}{ms_per(cpu[1], n):>12}{ms_per(cpu[2], n):>10}"
            + (f"  {'; '.join(extra)}" if extra else "")
        )
        for leg, _ in samples[0].legs:
            leg_wall = median([dict(s.legs)[leg] for s in samples])
            print(f"  {leg:20}{n / leg_wall:9.1f}{mb / leg_wall:8.1f}{leg_wall:9.2f}")
    for num, den, target in (("c", "a", 1.0), ("d", "b", 0.95)):
        label = f"{num}/{den}"
        if num not in results or den not in results:
            continue
        if num not in walls or den not in walls:
            print(f"{label}: withheld, a scenario failed or lost data (target >= {target:.2f})")
            continue
        ratio = walls[den] / walls[num]
        verdict = "met" if ratio >= target else "MISSED"
        if corpus.count < 1000:
            # pacsmig's ~1 s of start-up (CLI, plan check, sender processes) then dominates.
            verdict = f"not judged on {corpus.count} instances (smoke run: start-up dominates)"
        note = ""
        if num == "d" and results["d"][0].route != "direct":
            note = f"  (d arrived by {results['d'][0].route}: apply did not take the direct route)"
        print(f"{label} = {ratio:.2f}  target >= {target:.2f}: {verdict}{note}")
    return clean


# --------------------------------------------------------------------------- #
# send-only: pacsmig against storescu into storescp --ignore
# --------------------------------------------------------------------------- #


def chunks(files: Sequence[Path], parts: int) -> list[list[Path]]:
    return [list(files[i::parts]) for i in range(parts) if files[i::parts]]


def link_tree(files: Sequence[Path], into: Path) -> Path:
    """Hard links (symlinks across file systems) so storescu +sd reads a directory, not argv."""
    into.mkdir(parents=True)
    for index, path in enumerate(files):
        target = into / f"{index:07d}.dcm"
        try:
            os.link(path, target)
        except OSError:
            target.symlink_to(path)
    return into


def storescu_send(
    files: Sequence[Path], sink: StoreSCPServer, associations: int, work: Path, nodelay: bool
) -> tuple[Proc, str]:
    cmds = []
    for index, part in enumerate(chunks(files, associations)):
        tree = link_tree(part, work / f"part{index}")
        cmd = [dcmtk_tool("storescu"), "-R", "-nh", "+sd", "-aet", "STORESCU", "-aec", SINK_AET]
        cmds.append([*cmd, LOOPBACK, str(sink.port), str(tree)])
    log = work / "storescu.log"
    proc = run_all(cmds, dcmtk_env(nodelay), log)
    errors = [
        line for line in log.read_text(errors="replace").splitlines() if line[:2] in {"E:", "F:"}
    ]
    problem = f"storescu exited {proc.returncode}" if proc.returncode else ""
    if errors:
        problem = f"storescu reported {len(errors)} errors: {errors[0]}"
    return proc, problem


Triple = tuple[Path, str, str]  # path, SOP Class UID, Transfer Syntax UID
Sender = Callable[[Sequence[Triple], int], str]  # -> problem, "" when all stored


def triples(files: Sequence[Path]) -> list[Triple]:
    # Untimed: in apply the executor knows both UIDs from the retrieve, it reads no header.
    out = []
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        out.append((path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return out


def fallback_sender(port: int) -> Sender:
    """The single-association path of the old send_bench, one thread per association."""
    from pacsmig.dicomnet.ae import Peer
    from pacsmig.dicomnet.store import open_store

    peer = Peer(ae_title=SINK_AET, host=LOOPBACK, port=port, role="destination")

    def send(files: Sequence[Triple], associations: int) -> str:
        problems: list[str] = []

        def one(part: list[Triple]) -> None:
            try:
                with open_store(PACSMIG_AET, peer, {(c, t) for _, c, t in part}) as session:
                    for path, sop_class, ts in part:
                        outcome = session.send_file(path, sop_class, ts)
                        if not outcome.stored:
                            problems.append(outcome.describe())
                            return
            except Exception as exc:  # a benchmark reports, it does not crash mid-table
                problems.append(f"{type(exc).__name__}: {exc}")

        parts = [list(files[i::associations]) for i in range(associations)]
        threads = [threading.Thread(target=one, args=(part,)) for part in parts if part]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return f"pacsmig send failed: {problems[0]}" if problems else ""

    return send


def pacsmig_sender(port: int) -> tuple[str, Sender]:
    """pacsmig.apply.senders.send_files (worker processes) if present, else the fallback."""
    try:
        send_files = importlib.import_module("pacsmig.apply.senders").send_files
        from pacsmig.spec.model import Endpoint
    except (ImportError, AttributeError):
        return "fallback: threads in one process", fallback_sender(port)
    destination = Endpoint(ae_title=SINK_AET, host=LOOPBACK, port=port)

    def send(files: Sequence[Triple], associations: int) -> str:
        try:
            stats = send_files(PACSMIG_AET, destination, list(files), associations)
        except Exception as exc:  # reported in the table
            return f"send_files raised {type(exc).__name__}: {exc}"
        if stats.failed or stats.sent != len(files):
            reason = next(iter(stats.reasons), "")
            return f"send_files stored {stats.sent} of {len(files)}, {stats.failed} failed {reason}"
        return ""

    return "apply.senders.send_files", send


def pacsmig_send(
    files: Sequence[Triple], sink: StoreSCPServer, associations: int
) -> tuple[Proc, str]:
    _, send = pacsmig_sender(sink.port)
    # The sender's worker processes are reaped before it returns: RUSAGE_CHILDREN has them.
    cpu0, t0 = self_cpu(), time.perf_counter()
    problem = send(files, associations)
    wall, cpu = time.perf_counter() - t0, self_cpu() - cpu0
    return Proc(returncode=0, wall=wall, cpu=cpu), problem


def send_fixed_cost(corpus: Corpus, scratch: Path) -> str:
    """pacsmig's sender for one instance: its start and stop, a fixed cost in the rows above."""
    one = triples(corpus.files[:1])
    parts = []
    for associations in (1, 4):
        sink = StoreSCPServer(
            scratch / f"fixed-{associations}", aet=SINK_AET, ignore=True, fork=True
        )
        with sink:
            proc, problem = pacsmig_send(one, sink, associations)
        shutil.rmtree(sink.workdir, ignore_errors=True)
        cost = f"FAILED: {problem}" if problem else f"{proc.wall:.2f} s wall, {proc.cpu:.2f} s CPU"
        parts.append(f"{associations} association{'s' if associations > 1 else ''}: {cost}")
    return "pacsmig fixed cost (one instance, included above): " + "; ".join(parts)


def run_send_only(corpus: Corpus, scratch: Path, runs: int, nodelay: bool) -> list[str]:
    """Time every (size, associations, sender) cell; return the table rows."""
    rows = []
    for kind in ("ct", "small"):
        files = corpus.of_kind(kind)
        if not files:
            continue
        described = triples(files)
        mb = sum(f.stat().st_size for f in files) / 1e6
        for associations in (1, 4):
            cells: dict[str, list[Proc]] = {"storescu": [], "pacsmig": []}
            problems: dict[str, str] = {}
            for run_index in range(runs):
                for sender in cells:
                    work = scratch / f"send-{kind}-{associations}-{sender}-{nodelay}-{run_index}"
                    sink = StoreSCPServer(
                        work / "sink", aet=SINK_AET, ignore=True, fork=True, tcp_nodelay=nodelay
                    )
                    with sink:
                        if sender == "storescu":
                            proc, problem = storescu_send(files, sink, associations, work, nodelay)
                        else:
                            proc, problem = pacsmig_send(described, sink, associations)
                    shutil.rmtree(work, ignore_errors=True)
                    cells[sender].append(proc)
                    if problem:
                        problems.setdefault(sender, problem)
            base = median([p.wall for p in cells["storescu"]])
            for sender, procs in cells.items():
                nagle = "off" if nodelay else "ON"
                label = f"{kind:6}{associations:>6}  {nagle:6}{sender:9}"
                if sender in problems:
                    rows.append(f"{label}  FAILED: {problems[sender]}")
                    continue
                wall, cpu = median([p.wall for p in procs]), median([p.cpu for p in procs])
                rows.append(
                    f"{label}{len(files) / wall:9.1f}{mb / wall:8.1f}{wall:8.2f}"
                    f"{ms_per(cpu, len(files)):>10}{base / wall:7.2f}"
                )
            print(f"  send-only {kind} x{associations} (Nagle {'off' if nodelay else 'ON'}) done")
    return rows


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--ct", type=int, default=None, help="CT-like 512x512 instances (0.5 MB)")
    ap.add_argument("--small", type=int, default=None, help="64x64 instances (about 10 KB)")
    ap.add_argument("--studies", type=int, default=None, help="studies to spread them over")
    ap.add_argument("--runs", type=int, default=None, help="runs per scenario; the median counts")
    ap.add_argument("--quick", action="store_true", help="a tiny corpus and one run: smoke test")
    # The settings the README recommends for throughput; the spec defaults (1 and 1) protect
    # the source and are measured with --parallel 1 --associations 1.
    ap.add_argument("--parallel", type=int, default=4, help="spec source.parallel (default 4)")
    ap.add_argument(
        "--associations", type=int, default=2, help="spec destination.associations (default 2)"
    )
    ap.add_argument("--retrieve", choices=("c-move", "c-get"), default="c-move")
    ap.add_argument("--nagle", action="store_true", help="also measure with Nagle on at the peers")
    ap.add_argument("--nagle-sample", type=int, default=None, help="instances in the Nagle pass")
    ap.add_argument("--only", default="a,b,c,d,send", help="comma list of a,b,c,d,send")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pacsmig-throughput-bench"))
    ap.add_argument("--keep", action="store_true", help="keep each run's logs, plans, journals")
    args = ap.parse_args(argv)
    quick = {"ct": 10, "small": 60, "studies": 4, "runs": 1, "nagle_sample": 30}
    full = {"ct": 1000, "small": 2000, "studies": 40, "runs": 3, "nagle_sample": 200}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = args.only - {*SCENARIOS, "send"}
    if unknown:
        ap.error(f"--only: unknown {', '.join(sorted(unknown))} (choose from a,b,c,d,send)")
    if args.ct < 0 or args.small < 0 or args.ct + args.small == 0 or args.studies < 1:
        ap.error("--ct/--small: at least one instance; --studies: at least 1")
    if args.runs < 1:
        ap.error("--runs: at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.workdir, args.ct, args.small, args.studies)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    opts = Options(
        runs=args.runs,
        retrieve=args.retrieve,
        parallel=args.parallel,
        associations=args.associations,
        keep=args.keep,
    )
    sampled = corpus.prefix(args.nagle_sample)
    modes = [True, False] if args.nagle else [True]
    clean = True
    print(
        f"cpus: {os.cpu_count()}  runs: {args.runs}  retrieve: {args.retrieve}  "
        f"parallel: {args.parallel}  associations: {args.associations}  "
        f"sender: {pacsmig_sender(0)[0]}"
    )
    if args.only & {"c", "d"}:
        # A fixed cost inside every apply figure; it matters for small corpora only.
        boot = [
            run([sys.executable, "-m", "pacsmig", "--version"], pacsmig_env(), scratch / "boot.log")
            for _ in range(3)
        ]
        print(
            f"pacsmig start-up (python -m pacsmig --version, included in c and d): "
            f"{median([b.wall for b in boot]):.2f} s wall, {median([b.cpu for b in boot]):.2f} s CPU"
        )
    try:
        tables: list[tuple[str, Corpus, dict[str, list[Sample]]]] = []
        if args.only & set(SCENARIOS):
            with site(args.workdir, corpus, scratch) as peers:
                for nodelay in modes:
                    peers.set_nagle(nodelay)
                    part = corpus if nodelay else sampled
                    runs = args.runs if nodelay else 1
                    title = (
                        "migration, TCP_NODELAY at the peers"
                        if nodelay
                        else "migration, Nagle ON at the peers (TCP_NODELAY=0), one run"
                    )
                    print(f"\n{title} ...", flush=True)
                    results = run_migrations(
                        peers,
                        part,
                        dataclasses.replace(opts, runs=runs),
                        args.only,
                        partial=part is not corpus,
                    )
                    tables.append((title, part, results))
        for title, part, results in tables:
            clean = print_migrations(title, part, results) and clean
        if "send" in args.only:
            rows: list[str] = []
            for nodelay in modes:
                print(
                    f"\nsend-only, Nagle {'off' if nodelay else 'ON'} at the peer ...", flush=True
                )
                part = corpus if nodelay else sampled
                rows += run_send_only(part, scratch, args.runs if nodelay else 1, nodelay)
            print("\nsend-only into storescp --ignore --fork (ratio: storescu wall / this wall)")
            print(
                f"{'size':6}{'assoc':>6}  {'Nagle':6}{'sender':9}{'inst/s':>9}{'MB/s':>8}"
                f"{'wall s':>8}{'CPU ms/i':>10}{'ratio':>7}"
            )
            for row in rows:
                print(row)
                clean = clean and "FAILED" not in row
            print(send_fixed_cost(corpus, scratch))
    finally:
        if args.keep:
            print(f"\nkept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if not clean:
        print(
            "\nSOME SCENARIOS FAILED OR LOST DATA: their figures are not results", file=sys.stderr
        )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
