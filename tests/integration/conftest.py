"""Real PACS peers for integration tests: Orthanc and DCMTK processes on free loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pacsmig.testing.servers import OrthancServer, free_port

PACSMIG = str(Path(sys.executable).with_name("pacsmig"))

if shutil.which("Orthanc") is None and not Path("/usr/sbin/Orthanc").exists():  # pragma: no cover
    pytest.skip(
        "Orthanc is not installed (run ./test.sh, which installs it)", allow_module_level=True
    )


@dataclass
class Site:
    """Two Orthanc servers, pacsmig's own AE, and a work folder."""

    source: OrthancServer
    dest: OrthancServer
    local_port: int
    work: Path

    def spec(
        self,
        retrieve: str = "c-get",
        *,
        extra: str = "",
        source_port: int | None = None,
        source_aet: str | None = None,
        local_aet: str = "PACSMIG",
    ) -> Path:
        text = f"""\
version: 1
name: itest
local:
  ae_title: {local_aet}
  port: {self.local_port}
source:
  kind: dimse
  ae_title: {source_aet or self.source.aet}
  host: 127.0.0.1
  port: {source_port or self.source.dicom_port}
  retrieve: {retrieve}
  timeout: 20
destination:
  ae_title: {self.dest.aet}
  host: 127.0.0.1
  port: {self.dest.dicom_port}
  timeout: 20
{extra}"""
        path = self.work / f"spec-{retrieve}.yaml"
        path.write_text(text)
        return path


def run_cli(
    *args: str | Path, timeout: float = 300, check: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [PACSMIG, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check is not None:
        assert proc.returncode == check, (
            f"pacsmig {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    local_port = free_port()
    src_dir, dst_dir = tmp_path / "source", tmp_path / "dest"
    dest = OrthancServer(
        dst_dir, aet="NEWPACS", modalities={"pacsmig": ("PACSMIG", "127.0.0.1", local_port)}
    )
    source = OrthancServer(
        src_dir,
        aet="LEGACY",
        modalities={
            "pacsmig": ("PACSMIG", "127.0.0.1", local_port),
            "newpacs": ("NEWPACS", "127.0.0.1", dest.dicom_port),
        },
    )
    source.start()
    dest.start()
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield Site(source=source, dest=dest, local_port=local_port, work=work)
    finally:
        source.stop()
        dest.stop()
