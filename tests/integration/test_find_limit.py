"""A source that caps C-FIND answers (Orthanc LimitFindResults): the inventory is still complete."""

from __future__ import annotations

import json
from pathlib import Path

from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.servers import OrthancServer, free_port
from tests.integration.conftest import run_cli


def test_capped_source_is_inventoried_completely(tmp_path: Path) -> None:
    local = free_port()
    with (
        OrthancServer(
            tmp_path / "src",
            aet="LEGACY",
            extra_config={"LimitFindResults": 5},
            modalities={"pacsmig": ("PACSMIG", "127.0.0.1", local)},
        ) as source,
        OrthancServer(tmp_path / "dst", aet="NEWPACS") as dest,
    ):
        files = generate_corpus(tmp_path / "gen", studies=12, per_series=1, n_series=1)
        for f in files:
            assert source.upload(f)
        uids = source.study_instance_uids()
        assert len(uids) == 12
        base = (
            f"version: 1\nname: capped\nlocal: {{ae_title: PACSMIG, port: {local}}}\n"
            f"destination: {{ae_title: NEWPACS, host: 127.0.0.1, port: {dest.dicom_port}}}\n"
            "select: {study_date: {from: 2024-01-01, to: 2024-12-31}}\n"
        )
        src = f"source: {{kind: dimse, ae_title: LEGACY, host: 127.0.0.1, port: {source.dicom_port}"

        # Without find_limit: Orthanc marks a cut-short answer (status 0xFE00), so the windows
        # still find everything, but completeness is not claimed.
        naive = tmp_path / "naive.yaml"
        naive.write_text(base + src + "}\n")
        run_cli("plan", naive, "-o", tmp_path / "naive.json", check=0)
        doc = json.loads((tmp_path / "naive.json").read_text())
        assert {a["study_uid"] for a in doc["actions"]} == uids
        assert doc["header"]["inventory"]["complete"] is None

        spec = tmp_path / "spec.yaml"
        spec.write_text(base + src + ", find_limit: 5}\n")
        out = run_cli("plan", spec, "-o", tmp_path / "plan.json", check=0).stdout
        doc = json.loads((tmp_path / "plan.json").read_text())
        assert {a["study_uid"] for a in doc["actions"]} == uids
        inv = doc["header"]["inventory"]
        assert inv["complete"] is True and len(inv["windows"]) >= 3
        assert all(w["studies"] < 5 for w in inv["windows"])
        assert sum(w["studies"] for w in inv["windows"]) == 12
        assert "provably complete" in out
