"""The demo: a complete migration between two local Orthanc servers, as a user would run it.

Started by ./demo.sh after set-up. Everything lives under ./demo-work; the servers are stopped
at the end whatever happens.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from pacsmig.testing.corpus import generate_corpus, real_sample_files
from pacsmig.testing.servers import OrthancServer, free_port, stop_servers

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "demo-work"
PACSMIG = str(Path(sys.executable).with_name("pacsmig"))


def step(title: str, *args: str) -> None:
    print(f"\n=== {title}: pacsmig {' '.join(args)}", flush=True)
    proc = subprocess.run([PACSMIG, *args], cwd=WORK)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed at '{title}' (exit {proc.returncode})")


def write_spec(source: OrthancServer, dest: OrthancServer, local_port: int) -> Path:
    yaml = YAML()  # round-trip: keeps the example's comments
    spec = yaml.load((ROOT / "plans" / "example.yaml").read_text())
    spec["local"]["port"] = local_port
    spec["source"]["port"] = source.dicom_port
    spec["destination"]["port"] = dest.dicom_port
    out = io.StringIO()
    yaml.dump(spec, out)
    path = WORK / "spec.yaml"
    path.write_text(out.getvalue())
    return path


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    local_port = free_port()
    dest = OrthancServer(WORK / "newpacs", aet="NEWPACS")
    source = OrthancServer(
        WORK / "legacy",
        aet="LEGACY",
        modalities={"pacsmig": ("PACSMIG", "127.0.0.1", local_port)},
    )
    try:
        source.start()
        dest.start()
        print(f"Source Orthanc LEGACY: DICOM 127.0.0.1:{source.dicom_port}, web {source.url}")
        print(f"Destination Orthanc NEWPACS: DICOM 127.0.0.1:{dest.dicom_port}, web {dest.url}")
        files = real_sample_files() + generate_corpus(WORK / "generated", studies=6, per_series=4)
        loaded = sum(1 for f in files if source.upload(f) is not None)
        print(
            f"Loaded {loaded} instances ({len(real_sample_files())} real pydicom test files) into LEGACY"
        )
        spec = write_spec(source, dest, local_port)
        step("plan", "plan", spec.name, "-o", "holdout.plan.json")
        step("review", "show", "holdout.plan.json")
        step(
            "sign-off",
            "approve",
            "holdout.plan.json",
            "--by",
            "Demo Reviewer",
            "--note",
            "demo run",
        )
        step("apply", "apply", "holdout.plan.json")
        step("verify", "verify", "holdout.plan.json")
        step("report", "report", "holdout.plan.json", "-o", "report.html")
        held = dest.instance_count()
        print(f"\nNEWPACS now holds {held} instances (checked through its REST API).")
        print(f"Report: {WORK / 'report.html'}")
    finally:
        stop_servers(source, dest)


if __name__ == "__main__":
    main()
