"""Verification levels: which checks run, study by study, and how the results are kept.

counts       study and series counts at the destination (always run: the other levels build
             on what it finds)
instances    an instance-level query per study: the exact SOP Instance UIDs against the plan
attributes   the key patient and study attributes equal the plan's corrected values
images       a deterministic sample retrieved from both ends and compared element by element
commitment   DICOM Storage Commitment for what the destination lists, studies batched

`verify_plan` runs them on demand (`pacsmig verify`); `live.LiveVerifier` runs them during
apply as studies complete. Both record one row per study in the journal and mark instances
apply must send again (missing, not committed, different at the destination).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pacsmig.apply.sources import SourceAccess, open_source
from pacsmig.dicomnet.ae import Peer
from pacsmig.dicomnet.find import FindSession, open_find
from pacsmig.errors import InputError
from pacsmig.inventory.dimse import peer_of
from pacsmig.inventory.model import InstanceRecord
from pacsmig.journal.store import (
    DIFFERS_AT_DESTINATION,
    FAILED,
    MISSING,
    NOT_COMMITTED,
    SENT,
    Journal,
)
from pacsmig.plan.codec import fingerprint
from pacsmig.plan.model import Plan, StudyAction
from pacsmig.spec.load import spec_of_plan
from pacsmig.spec.model import VERIFY_LEVELS, Spec
from pacsmig.verify.commitment import (
    CommitRequest,
    batches,
    commit_batch,
    commitment_listener,
    items_for,
)
from pacsmig.verify.counts import (
    ATTRIBUTES_DIFFER,
    ERROR,
    IMAGES_DIFFER,
    MISSING_STATUS,
    NOT_FOUND,
    STATUS_ORDER,
    VERIFIED,
    Progress,
    StudyCheck,
    VerifyResult,
    _SourceLookup,
    check_study,
    detail_of,
    planned_for_destination,
)
from pacsmig.verify.counts import (
    NOT_COMMITTED as NOT_COMMITTED_STATUS,
)
from pacsmig.verify.images import ImageChecker
from pacsmig.verify.instances import instance_check, records_of
from pacsmig.verify.results import CommitmentCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyOptions:
    levels: tuple[str, ...]
    image_fraction: float | None = None
    image_count: int | None = None
    commitment_timeout: float = 60.0

    def has(self, level: str) -> bool:
        return level in self.levels

    @property
    def needs_instances(self) -> bool:
        return any(self.has(x) for x in ("instances", "images", "commitment"))


def parse_levels(text: str) -> tuple[str, ...]:
    """ "counts,images" -> ("counts", "images"); unknown names are an input error."""
    levels = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [x for x in levels if x not in VERIFY_LEVELS]
    if unknown or not levels:
        raise InputError(
            f"verify --levels: unknown level {unknown[0]!r}; expected some of "
            f"{', '.join(VERIFY_LEVELS)}"
            if unknown
            else "verify --levels: name at least one level"
        )
    return levels


def parse_image_sample(text: str) -> float | int:
    """ "0.05" -> a fraction of each study; "5" -> a number of instances per study."""
    try:
        value: float | int = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise InputError(
            f"verify --image-sample: {text!r} is neither a fraction (0.05) nor a count (5)"
        ) from None
    if isinstance(value, float) and not 0 < value <= 1:
        raise InputError(f"verify --image-sample: a fraction must be in (0, 1], not {text}")
    if isinstance(value, int) and value < 0:
        raise InputError(f"verify --image-sample: a count must be 0 or more, not {text}")
    return value


def options_for(
    spec: Spec, levels: Sequence[str] | None = None, image_sample: float | int | None = None
) -> VerifyOptions:
    chosen = tuple(levels) if levels else spec.verify.levels
    unknown = [x for x in chosen if x not in VERIFY_LEVELS]
    if unknown:
        raise InputError(f"verify: unknown level {unknown[0]!r}")
    if "counts" not in chosen:
        chosen = ("counts", *chosen)
    fraction, count = spec.verify.image_sample_fraction, spec.verify.image_sample_count
    if image_sample is not None:
        if isinstance(image_sample, bool):
            raise InputError("verify: image_sample must be a fraction or a count")
        if isinstance(image_sample, int):
            fraction, count = None, image_sample
        else:
            fraction, count = float(image_sample), None
    return VerifyOptions(
        levels=tuple(x for x in VERIFY_LEVELS if x in chosen),
        image_fraction=fraction,
        image_count=count,
        commitment_timeout=spec.verify.commitment_timeout,
    )


def study_status(check: StudyCheck, *, level_error: bool = False) -> str:
    """The first status of STATUS_ORDER that the findings support."""
    found: set[str] = set()
    if check.status == NOT_FOUND:
        found.add(NOT_FOUND)
    if (
        check.missing
        or any(s.found < s.expected for s in check.series)
        or (check.instance_set is not None and check.instance_set.missing)
    ):
        found.add(MISSING_STATUS)
    if check.attributes:
        found.add(ATTRIBUTES_DIFFER)
    if check.images is not None and check.images.different:
        found.add(IMAGES_DIFFER)
    if check.commitment is not None and not check.commitment.ok:
        found.add(NOT_COMMITTED_STATUS)
    if level_error or (check.images is not None and check.images.errors):
        found.add(ERROR)
    return next((s for s in STATUS_ORDER if s in found), VERIFIED)


class StudyVerifier:
    """Verifies one study at a time at every level but commitment (which is batched)."""

    def __init__(
        self,
        plan: Plan,
        spec: Spec,
        options: VerifyOptions,
        journal: Journal,
        *,
        source: SourceAccess | None,
        lookup: _SourceLookup,
        spool_root: Path,
    ) -> None:
        self.plan = plan
        self.spec = spec
        self.options = options
        self.journal = journal
        self.lookup = lookup
        self.destination: Peer = peer_of(spec.destination, "destination")
        self.images: ImageChecker | None = None
        if options.has("images") and source is not None:
            self.images = ImageChecker(
                calling=spec.local.ae_title,
                destination=self.destination,
                source=source,
                spool_root=spool_root,
                fingerprint=fingerprint(plan),
                fraction=options.image_fraction,
                count=options.image_count,
            )

    def expected(self, action: StudyAction) -> list[InstanceRecord]:
        """What the source held: as apply recorded it, else (never applied) asked now."""
        rows = self.journal.instances(action.study_uid)
        if rows:
            return records_of(rows)
        return self.lookup.study_instances(action.study_uid)

    def verify(
        self,
        action: StudyAction,
        dest: FindSession,
        *,
        found: Sequence[InstanceRecord] | None = None,
    ) -> tuple[StudyCheck, list[InstanceRecord], list[InstanceRecord]]:
        """The study's check, with the expected and found instances (for commitment).

        `found`: the destination's instance-level answer for the study, if one was just
        taken (UIDs and series only); used unless images or commitment need SOP classes.
        """
        hint = found
        opts = self.options
        expected: list[InstanceRecord] = []
        found = []
        if opts.needs_instances:
            expected = self.expected(action)
        else:
            expected = records_of(self.journal.instances(action.study_uid))
        known: dict[str, set[str]] = {}
        for r in expected:
            known.setdefault(r.series_uid, set()).add(r.sop_uid)
        check = check_study(action, dest, known, self.lookup)
        levels = [x for x in opts.levels if x != "commitment"]
        if not opts.has("attributes") and check.attributes:
            check = dataclasses.replace(check, attributes=())
        if check.status == NOT_FOUND:
            return dataclasses.replace(check, levels=tuple(levels)), expected, found
        if opts.needs_instances:
            # SOP classes cost the destination a read of every instance (Orthanc): ask for
            # them only when images or commitment need them.
            with_class = opts.has("images") or opts.has("commitment")
            found = (
                list(hint)
                if hint is not None and not with_class
                else dest.study_instances(action.study_uid, with_class=with_class)
            )
            series, instance_set = instance_check(action, expected, found)
            check = dataclasses.replace(check, series=series)
            if opts.has("instances"):
                check = dataclasses.replace(check, instance_set=instance_set)
        note = check.note
        if opts.has("images"):
            if self.images is None:
                levels.remove("images")
                note = _join(note, "images: not checked (no source copy; run pacsmig verify)")
            else:
                check = dataclasses.replace(
                    check, images=self.images.check(action, expected, found)
                )
        check = dataclasses.replace(check, levels=tuple(levels), note=note)
        return dataclasses.replace(check, status=study_status(check)), expected, found


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def with_commitment(check: StudyCheck, commitment: CommitmentCheck) -> StudyCheck:
    merged = dataclasses.replace(
        check,
        commitment=commitment,
        levels=(*check.levels, "commitment"),
        note=_join(check.note, commitment.note) if commitment.note else check.note,
    )
    return dataclasses.replace(merged, status=study_status(merged))


def record(journal: Journal, run_id: int, check: StudyCheck) -> None:
    """The study's row, and the instance marks apply acts on (send again)."""
    journal.record_verification(
        run_id,
        check.study_uid,
        check.status,
        check.expected_instances,
        check.found_instances,
        detail_of(check),
    )
    rows = {r.sop_uid: r for r in journal.instances(check.study_uid)}

    def markable(uids: set[str]) -> list[str]:
        # A failed instance keeps its failure and reason: that is why it is not there.
        return sorted(u for u in uids if u in rows and rows[u].state != FAILED)

    missing = set(check.missing)
    if check.instance_set is not None:
        missing |= set(check.instance_set.missing)
    images, commitment = check.images, check.commitment
    differs = {c.sop_uid for c in images.different} if images else set()
    same = {c.sop_uid for c in images.comparisons if c.equal} if images else set()
    uncommitted = {f.sop_uid for f in commitment.failed} if commitment else set()
    answered = commitment is not None and not commitment.timed_out
    # A mark a later verification disproves is lifted, or apply would send again for nothing.
    lift = set()
    for row in rows.values():
        if row.state != MISSING or row.sop_uid in missing:
            continue
        now_same = row.reason == DIFFERS_AT_DESTINATION and row.sop_uid in same
        now_committed = row.reason == NOT_COMMITTED and answered
        if now_same or (now_committed and row.sop_uid not in uncommitted):
            lift.add(row.sop_uid)
    lift -= differs | uncommitted
    for uids, state, reason in (
        (lift, SENT, ""),
        (missing, MISSING, "not_at_destination"),
        (differs - missing, MISSING, DIFFERS_AT_DESTINATION),
        (uncommitted - missing, MISSING, NOT_COMMITTED),
    ):
        if marked := markable(uids):
            journal.set_instances(run_id, marked, state, reason)


def error_check(action: StudyAction, levels: Sequence[str], why: str) -> StudyCheck:
    return StudyCheck(
        study_uid=action.study_uid,
        status=ERROR,
        expected_instances=action.instance_count,
        found_instances=0,
        levels=tuple(levels),
        note=why,
    )


@contextlib.contextmanager
def source_for_images(
    spec: Spec, options: VerifyOptions, index_path: Path | None
) -> Iterator[SourceAccess | None]:
    if not options.has("images"):
        yield None
        return
    with open_source(spec, index_path) as source:
        yield source


def verify_plan(
    plan: Plan,
    journal: Journal,
    progress: Progress | None = None,
    *,
    index_path: Path | None = None,
    levels: Sequence[str] | None = None,
    image_sample: float | int | None = None,
) -> VerifyResult:
    """Verify every study the plan promises at the destination, at the chosen levels."""
    spec = spec_of_plan(plan.header.spec, plan.header.base_dir)
    options = options_for(spec, levels, image_sample)
    dest_peer = peer_of(spec.destination, "destination")
    todo = planned_for_destination(plan)
    run_id = journal.start_run("verify", fingerprint(plan), None)
    lookup = _SourceLookup(plan, index_path)
    spool_root = journal.path.with_name(journal.path.name + ".verify-spool")
    checks: list[StudyCheck] = []
    pending: list[tuple[int, CommitRequest]] = []
    outcome = "failed"
    try:
        # Phase one, per study; the source's Storage SCP (C-MOVE) holds local.port meanwhile.
        with (
            source_for_images(spec, options, index_path) as source,
            open_find(spec.local.ae_title, dest_peer) as dest,
        ):
            verifier = StudyVerifier(
                plan, spec, options, journal, source=source, lookup=lookup, spool_root=spool_root
            )
            for n, action in enumerate(todo, 1):
                check, expected, found = verifier.verify(action, dest)
                checks.append(check)
                record(journal, run_id, check)
                if options.has("commitment") and check.status != NOT_FOUND:
                    items = items_for(expected, found)
                    pending.append(
                        (len(checks) - 1, CommitRequest(study_uid=action.study_uid, items=items))
                    )
                if progress:
                    progress(n, len(todo))
        # Phase two, batched: the listener takes local.port for reports on a new association.
        if pending:
            index = {req.study_uid: i for i, req in pending}
            with commitment_listener(spec) as note:
                for batch in batches([req for _, req in pending]):
                    answers = commit_batch(
                        spec.local.ae_title,
                        dest_peer,
                        batch,
                        timeout=options.commitment_timeout,
                        note=note,
                    )
                    for study_uid, commitment in answers.items():
                        i = index[study_uid]
                        checks[i] = with_commitment(checks[i], commitment)
                        record(journal, run_id, checks[i])
        result = VerifyResult(run_id=run_id, checks=tuple(checks))
        outcome = "ok" if result.ok else "mismatch"
        return result
    finally:
        lookup.close()
        shutil.rmtree(spool_root, ignore_errors=True)
        journal.finish_run(run_id, outcome)


def status_counts(checks: Sequence[StudyCheck]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in checks:
        out[c.status] = out.get(c.status, 0) + 1
    return out
