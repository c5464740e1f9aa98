"""The send stage on its own: several worker processes, each with its own association."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from pacsmig.apply.senders import SenderConfig, SenderPool, SendJob, send_files
from pacsmig.spec.model import Endpoint
from pacsmig.testing.corpus import generate_corpus
from pacsmig.testing.fault_scp import FaultSCP, delay, respond
from tests.conftest import time_limit


@pytest.fixture()
def scp() -> Iterator[FaultSCP]:
    with FaultSCP("FAULTSCP", allowed_calling=["PACSMIG"]) as server, time_limit(120):
        yield server


def _files(tmp_path: Path, n_studies: int) -> list[tuple[Path, str, str]]:
    out = []
    for path in generate_corpus(tmp_path / "gen", studies=n_studies, per_series=2):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append((path, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    return out


def _endpoint(scp: FaultSCP) -> Endpoint:
    return Endpoint(ae_title=scp.ae_title, host=scp.host, port=scp.port, timeout=20)


def test_several_associations_send_at_once_and_each_instance_once(
    tmp_path: Path, scp: FaultSCP
) -> None:
    """With a slow destination (0.4 s per store), 3 associations overlap their stores."""
    files = _files(tmp_path, 2)
    scp.script_default(delay(0.4))
    stats = send_files("PACSMIG", _endpoint(scp), files, associations=3)

    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p, _, _ in files}
    assert stats.sent == len(files) and stats.failed == 0
    assert scp.stored_uids() == uids
    assert set(scp.attempt_counts().values()) == {1}, "an instance was sent twice"
    arrivals = sorted(a.at for a in scp.attempts())
    # One association would space arrivals >= 0.4 s apart; three put several within 0.2 s.
    close = sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < 0.2)
    assert close >= len(files) // 3, arrivals


def test_one_association_sends_in_order_one_at_a_time(tmp_path: Path, scp: FaultSCP) -> None:
    files = _files(tmp_path, 1)[:4]
    scp.script_default(delay(0.3))
    stats = send_files("PACSMIG", _endpoint(scp), files, associations=1)
    assert stats.sent == 4
    arrivals = sorted(a.at for a in scp.attempts())
    assert all(b - a >= 0.25 for a, b in zip(arrivals, arrivals[1:], strict=False)), arrivals


def test_a_permanent_failure_is_reported_per_instance_not_retried(
    tmp_path: Path, scp: FaultSCP
) -> None:
    files = _files(tmp_path, 1)[:3]
    scp.script_default(respond(0xA900, "no"))
    pool = SenderPool(
        SenderConfig(calling_ae_title="PACSMIG", destination=_endpoint(scp), associations=2)
    ).start()
    try:
        for n, (path, cls, ts) in enumerate(files):
            pool.submit(
                SendJob(
                    job_id=n,
                    study_uid="s",
                    sop_uid=str(n),
                    sop_class_uid=cls,
                    transfer_syntax=ts,
                    path=str(path),
                    size=path.stat().st_size,
                )
            )
        results = [pool.result(30) for _ in files]
    finally:
        pool.close()
    assert all(r is not None for r in results)
    codes = sorted(r.outcome.code for r in results if r is not None and r.outcome is not None)
    assert codes == [0xA900] * 3
    assert set(scp.attempt_counts().values()) == {1}


def test_more_associations_than_the_destination_allows_lose_nothing(
    tmp_path: Path, scp: FaultSCP
) -> None:
    """A PACS that takes 2 associations, 4 configured: the extra workers wait for a slot.

    Before, their instances spent every attempt on "local limit exceeded" and failed.
    """
    files = _files(tmp_path, 3)
    scp._ae.maximum_associations = 2
    stats = send_files("PACSMIG", _endpoint(scp), files, associations=4)
    assert (stats.sent, stats.failed) == (len(files), 0), stats.reasons
    assert set(scp.attempt_counts().values()) == {1}
