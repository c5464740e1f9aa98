"""Inventory through DICOM query (C-FIND)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.find import open_find
from pacsmig.dicomnet.tls import TlsConfig
from pacsmig.inventory.model import Holdings, StudyRecord
from pacsmig.inventory.windows import WindowedInventory, inventory_windows
from pacsmig.spec.model import DimseSource, Endpoint, Spec, TlsFiles

Progress = Callable[[int, int], None]


def peer_of(endpoint: Endpoint, role: str) -> Peer:
    return Peer(
        ae_title=endpoint.ae_title,
        host=endpoint.host,
        port=endpoint.port,
        timeout=endpoint.timeout,
        max_pdu=endpoint.max_pdu,
        role=role,
        tls=tls_config(endpoint.tls),
    )


def tls_config(files: TlsFiles | None) -> TlsConfig | None:
    if files is None:
        return None
    return TlsConfig(ca=files.ca, cert=files.cert, key=files.key)


def inventory_source(
    spec: Spec, progress: Progress | None = None
) -> tuple[list[StudyRecord], WindowedInventory]:
    """Studies matching spec.select at the source, each with its series and counts."""
    if not isinstance(spec.source, DimseSource):
        raise TypeError("inventory_source needs a DIMSE source")
    peer = peer_of(spec.source, "source")
    wanted = set(spec.select.modalities)
    out: list[StudyRecord] = []
    with open_find(spec.local.ae_title, peer) as finder:
        limit = spec.source.find_limit

        def query(date_range: str, time_range: str) -> tuple[list[StudyRecord], bool]:
            found = finder.studies(study_date=date_range, study_time=time_range)
            at_cap = limit is not None and finder.last_answers >= limit
            return found, at_cap or finder.truncated

        windowed = inventory_windows(
            query,
            date_from=spec.select.date_from,
            date_to=spec.select.date_to,
            provable=limit is not None,
        )
        studies = windowed.studies
        for i, study in enumerate(sorted(studies, key=lambda s: s.study_uid), 1):
            series = tuple(finder.series(study.study_uid))
            record = dataclasses.replace(study, series=series)
            modalities = set(record.modalities) | {s.modality for s in series}
            if not wanted or modalities & wanted:
                out.append(record)
            if progress:
                progress(i, len(studies))
    return out, windowed


def destination_holdings(
    spec: Spec, study_uids: Iterable[str], progress: Progress | None = None
) -> dict[str, Holdings]:
    """Series instance counts the destination holds for each study (absent when none)."""
    peer = peer_of(spec.destination, "destination")
    uids = list(study_uids)
    out: dict[str, Holdings] = {}
    if not uids:
        return out
    with open_find(spec.local.ae_title, peer) as finder:
        for i, uid in enumerate(uids, 1):
            series = finder.series(uid)
            if series:
                out[uid] = Holdings(
                    study_uid=uid, series_counts={s.series_uid: s.instance_count for s in series}
                )
            if progress:
                progress(i, len(uids))
    return out
