"""The images level: a sample retrieved from both ends and compared element by element.

The destination's copy comes back by C-GET; the source's through the same SourceAccess apply
uses (C-GET or C-MOVE from a PACS, the file from legacy storage). Both are spooled under the
journal's folder (they hold patient data) and removed when the study is done.
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from pacsmig.apply.sources import SourceAccess, image_requests
from pacsmig.apply.spool import StudySpool
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.retrieve import c_get
from pacsmig.errors import PacsmigError
from pacsmig.inventory.model import InstanceRecord
from pacsmig.plan.model import StudyAction
from pacsmig.verify.compare import ImageComparison, compare_instance, rules_for
from pacsmig.verify.results import ImageCheck, InstanceProblem
from pacsmig.verify.sample import sample_instances

log = logging.getLogger(__name__)


class ImageChecker:
    def __init__(
        self,
        *,
        calling: str,
        destination: Peer,
        source: SourceAccess,
        spool_root: Path,
        fingerprint: str,
        fraction: float | None,
        count: int | None,
    ) -> None:
        self.calling = calling
        self.destination = destination
        self.source = source
        self.spool_root = spool_root
        self.fingerprint = fingerprint
        self.fraction = fraction
        self.count = count

    def check(
        self,
        action: StudyAction,
        expected: list[InstanceRecord],
        found: list[InstanceRecord],
    ) -> ImageCheck:
        """Compare the sampled instances of one study (expected: the source's instances)."""
        sampled = sample_instances(
            self.fingerprint,
            [r.sop_uid for r in expected],
            fraction=self.fraction,
            count=self.count,
        )
        at_dest = {r.sop_uid: r for r in found}
        errors = [
            InstanceProblem(sop_uid=uid, reason="not at the destination")
            for uid in sampled
            if uid not in at_dest
        ]
        by_uid = {r.sop_uid: r for r in expected}
        wanted = [by_uid[uid] for uid in sampled if uid in at_dest]
        if not wanted:
            return ImageCheck(sampled=len(sampled), errors=tuple(errors))
        uids = {r.sop_uid for r in wanted}
        dest_spool = StudySpool(self.spool_root / "destination", action.study_uid, set(uids))
        src_spool = StudySpool(self.spool_root / "source", action.study_uid, set(uids))
        comparisons: list[ImageComparison] = []
        try:
            dest_note = self._from_destination(
                action.study_uid, [at_dest[u] for u in sorted(uids)], dest_spool
            )
            src_note = self._from_source(action.study_uid, expected, wanted, src_spool)
            for record in wanted:
                uid = record.sop_uid
                if uid not in dest_spool.received:
                    errors.append(
                        InstanceProblem(
                            sop_uid=uid, reason=f"not retrieved from the destination: {dest_note}"
                        )
                    )
                    continue
                if uid not in src_spool.received:
                    errors.append(
                        InstanceProblem(
                            sop_uid=uid, reason=f"not retrieved from the source: {src_note}"
                        )
                    )
                    continue
                try:
                    source_ds = _read(src_spool.received[uid].path)
                    dest_ds = _read(dest_spool.received[uid].path)
                except Exception as exc:  # a copy pydicom cannot parse is a finding, not a crash
                    errors.append(
                        InstanceProblem(
                            sop_uid=uid, reason=f"unreadable copy: {type(exc).__name__}"
                        )
                    )
                    continue
                comparisons.append(compare_instance(uid, source_ds, dest_ds, rules_for(action)))
        finally:
            dest_spool.cleanup()
            src_spool.cleanup()
        return ImageCheck(
            sampled=len(sampled), comparisons=tuple(comparisons), errors=tuple(errors)
        )

    def _from_destination(
        self, study_uid: str, records: list[InstanceRecord], spool: StudySpool
    ) -> str:
        classes = sorted({r.sop_class_uid for r in records if r.sop_class_uid})
        problems: list[str] = []
        for request in image_requests(study_uid, records):
            try:
                result = c_get(
                    self.calling,
                    self.destination,
                    request,
                    classes,
                    spool,
                    classes_known=len(classes) > 0 and all(r.sop_class_uid for r in records),
                )
            except PacsmigError as exc:
                problems.append(str(exc))
                continue
            if result.status != 0x0000:
                problems.append(result.describe())
        return problems[-1] if problems else "retrieved"

    def _from_source(
        self,
        study_uid: str,
        expected: list[InstanceRecord],
        wanted: list[InstanceRecord],
        spool: StudySpool,
    ) -> str:
        try:
            return self.source.fetch(study_uid, expected, wanted, spool)
        except PacsmigError as exc:
            return str(exc)


def _read(path: Path) -> Dataset:
    return dcmread(BytesIO(path.read_bytes()))
