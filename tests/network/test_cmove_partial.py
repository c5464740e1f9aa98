"""Scenario 8: C-MOVE partial results from a source that loses sub-operations.

Expected: completion is judged by what pacsmig's Storage SCP actually received against the
plan, not by the source's counts; only the missing instances are asked for again; what never
arrives is failed with a reason, and the rest is migrated.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from pacsmig import api
from pacsmig.journal.store import FAILED, Journal
from pacsmig.plan.codec import read_plan
from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.fault_scp import FaultSCP
from pacsmig.testing.servers import free_port


class LossySource:
    """A Q/R SCP whose C-MOVE silently drops the instances named in `withhold`."""

    def __init__(self, files: list[Path], move_port: int) -> None:
        self.datasets = [pydicom.dcmread(f) for f in files]
        self.move_port = move_port
        self.withhold: set[str] = set()
        self.withhold_once: set[str] = set()
        self.move_requests: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        self.ae = AE(ae_title="LOSSY")
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        self.ae.requested_contexts = [
            cx
            for cx in AllStoragePresentationContexts
            if cx.abstract_syntax in {str(d.SOPClassUID) for d in self.datasets}
        ]
        self.port = free_port()
        handlers = [(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_MOVE, self.on_move)]
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )

    def _matching(self, ident: Dataset) -> list[Dataset]:
        out = []
        for ds in self.datasets:
            ok = True
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                want = ident.get(kw)
                if want in (None, ""):
                    continue
                values = (
                    [str(v) for v in want]
                    if isinstance(want, list | pydicom.multival.MultiValue)
                    else [str(want)]
                )
                ok = ok and str(getattr(ds, kw)) in values
            if ok:
                out.append(ds)
        return out

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        ident = event.identifier
        level = ident.QueryRetrieveLevel
        seen: set[str] = set()
        for ds in self._matching(ident):
            key = {"STUDY": ds.StudyInstanceUID, "SERIES": ds.SeriesInstanceUID}.get(
                level, ds.SOPInstanceUID
            )
            if key in seen:
                continue
            seen.add(key)
            rsp = Dataset()
            rsp.QueryRetrieveLevel = level
            rsp.StudyInstanceUID = ds.StudyInstanceUID
            for kw in (
                "PatientID",
                "PatientName",
                "StudyDate",
                "AccessionNumber",
                "StudyDescription",
            ):
                setattr(rsp, kw, ds.get(kw, ""))
            if level in ("SERIES", "IMAGE"):
                rsp.SeriesInstanceUID = ds.SeriesInstanceUID
                rsp.Modality = ds.Modality
            if level == "IMAGE":
                rsp.SOPInstanceUID = ds.SOPInstanceUID
                rsp.SOPClassUID = ds.SOPClassUID
            yield 0xFF00, rsp

    def on_move(self, event: Any) -> Iterator[Any]:
        matches = self._matching(event.identifier)
        with self.lock:
            self.move_requests.append(
                (event.identifier.QueryRetrieveLevel, [str(d.SOPInstanceUID) for d in matches])
            )
        yield "127.0.0.1", self.move_port
        yield len(matches)
        for ds in matches:
            uid = str(ds.SOPInstanceUID)
            if uid in self.withhold or uid in self.withhold_once:
                self.withhold_once.discard(uid)
                continue  # a sub-operation that never arrives
            yield 0xFF00, ds

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[tuple[LossySource, FaultSCP, Path]]:
    files = generate_corpus(tmp_path / "gen", studies=2, n_series=1, per_series=4, rows=8, cols=8)
    local_port = free_port()
    source = LossySource(files, local_port)
    with FaultSCP("NEWPACS") as dest:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            f"version: 1\nname: lossy\nlocal: {{ae_title: PACSMIG, port: {local_port}}}\n"
            f"source: {{kind: dimse, ae_title: LOSSY, host: 127.0.0.1, port: {source.port}, retrieve: c-move, timeout: 10}}\n"
            f"destination: {{ae_title: NEWPACS, host: 127.0.0.1, port: {dest.port}, timeout: 10}}\n"
        )
        plan = tmp_path / "plan.json"
        api.plan(spec, plan)
        try:
            yield source, dest, plan
        finally:
            source.close()


def test_lost_sub_operations_are_asked_for_again(rig: tuple[LossySource, FaultSCP, Path]) -> None:
    source, dest, plan = rig
    victims = {str(source.datasets[1].SOPInstanceUID), str(source.datasets[6].SOPInstanceUID)}
    source.withhold_once = set(victims)
    result = api.apply(plan, auto_approve=True)
    assert result.ok and result.sent == 8
    assert dest.stored_uids() == {str(d.SOPInstanceUID) for d in source.datasets}
    retries = [uids for level, uids in source.move_requests if level == "IMAGE"]
    assert sorted(u for r in retries for u in r) == sorted(victims), (
        "only the missing are asked again"
    )


def test_sub_operations_that_never_arrive_are_failed_with_a_reason(
    rig: tuple[LossySource, FaultSCP, Path],
) -> None:
    source, dest, plan = rig
    victim = str(source.datasets[2].SOPInstanceUID)
    source.withhold = {victim}
    result = api.apply(plan, auto_approve=True)
    assert not result.ok and result.failure_reasons == {"not_retrieved": 1}
    assert dest.stored_uids() == {str(d.SOPInstanceUID) for d in source.datasets} - {victim}
    with Journal.open(api.journal_path(plan, read_plan(plan))) as journal:
        row = next(r for r in journal.instances() if r.sop_uid == victim)
    assert row.state == FAILED and row.reason == "not_retrieved"
    # Healed source: the next apply fetches exactly the one that is missing.
    source.withhold = set()
    source.move_requests.clear()
    assert api.apply(plan).ok
    assert source.move_requests == [("IMAGE", [victim])]
    assert victim in dest.stored_uids()
