"""The commitment level: ask the destination to commit what it lists, studies batched.

One N-ACTION covers several studies (up to BATCH_INSTANCES references); the result is split
back per study. A report on a separate association reaches pacsmig through a listener on
`local.port` (`commitment_listener`), which hands it to the process-wide registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.commitment import CommitmentItem, CommitmentResult, request_commitment
from pacsmig.dicomnet.scp import StorageSCP
from pacsmig.errors import PacsmigError
from pacsmig.inventory.dimse import tls_config
from pacsmig.inventory.model import InstanceRecord
from pacsmig.spec.model import Spec
from pacsmig.verify.results import CommitmentCheck, InstanceProblem

BATCH_INSTANCES = 1000
TIMEOUT_REASON = "not committed (timeout)"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRequest:
    study_uid: str
    items: tuple[CommitmentItem, ...]


def items_for(
    expected: list[InstanceRecord], found: list[InstanceRecord]
) -> tuple[CommitmentItem, ...]:
    """The planned instances the destination lists, with their SOP class (destination's first)."""
    classes = {r.sop_uid: r.sop_class_uid for r in expected if r.sop_class_uid}
    classes.update({r.sop_uid: r.sop_class_uid for r in found if r.sop_class_uid})
    planned = {r.sop_uid for r in expected}
    return tuple(
        CommitmentItem(sop_class_uid=classes.get(r.sop_uid, ""), sop_uid=r.sop_uid)
        for r in sorted(found, key=lambda r: r.sop_uid)
        if r.sop_uid in planned
    )


@contextlib.contextmanager
def commitment_listener(spec: Spec) -> Iterator[str]:
    """pacsmig's listener on local.port for reports on a separate association.

    Yields a note: empty when listening, else why a separate-association report cannot arrive.
    """
    if spec.local.port is None:
        yield "local.port is not set: only a report on the request's association can arrive"
        return
    listener = StorageSCP(
        ae_title=spec.local.ae_title,
        port=spec.local.port,
        bind=spec.local.bind,
        allowed_calling=[],
        commitment_from=[spec.destination.ae_title],
        timeout=spec.destination.timeout,
        tls=tls_config(spec.local.tls),
    )
    listener.start()
    try:
        yield ""
    finally:
        listener.stop()


def batches(
    requests: Sequence[CommitRequest], size: int = BATCH_INSTANCES
) -> Iterator[list[CommitRequest]]:
    """Whole studies per batch, a batch closed once it holds `size` references or more."""
    batch: list[CommitRequest] = []
    held = 0
    for request in requests:
        batch.append(request)
        held += len(request.items)
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def commit_batch(
    calling: str,
    destination: Peer,
    batch: Sequence[CommitRequest],
    *,
    timeout: float,
    note: str = "",
) -> dict[str, CommitmentCheck]:
    """One N-ACTION for the batch; per study, what was committed."""
    items = [i for r in batch for i in r.items]
    try:
        result = request_commitment(calling, destination, items, timeout=timeout)
    except PacsmigError as exc:
        return {
            r.study_uid: CommitmentCheck(
                requested=len(r.items),
                committed=0,
                failed=tuple(InstanceProblem(sop_uid=i.sop_uid, reason=str(exc)) for i in r.items),
                note=str(exc),
            )
            for r in batch
        }
    return {r.study_uid: _split(result, r, note) for r in batch}


def _split(result: CommitmentResult, request: CommitRequest, note: str) -> CommitmentCheck:
    mine = {i.sop_uid for i in request.items}
    committed = [u for u in result.committed if u in mine]
    if result.timed_out:
        failed = tuple(
            InstanceProblem(sop_uid=i.sop_uid, reason=TIMEOUT_REASON) for i in request.items
        )
        text = TIMEOUT_REASON + (f"; {note}" if note else "")
        return CommitmentCheck(
            requested=len(mine), committed=0, failed=failed, timed_out=True, note=text
        )
    failed = tuple(
        InstanceProblem(sop_uid=f.sop_uid, reason=f.reason)
        for f in result.failed
        if f.sop_uid in mine
    )
    return CommitmentCheck(requested=len(mine), committed=len(committed), failed=failed)
