"""What the instances, images and commitment levels found for one study (frozen values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pacsmig.verify.compare import ImageComparison


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceProblem:
    sop_uid: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSetCheck:
    """The exact SOP Instance UIDs at the destination against those planned."""

    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def detail(self) -> dict[str, Any]:
        return {"missing": list(self.missing), "extra": list(self.extra)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageCheck:
    """The sampled instances retrieved from both ends and compared."""

    sampled: int
    comparisons: tuple[ImageComparison, ...] = ()
    errors: tuple[InstanceProblem, ...] = ()

    @property
    def different(self) -> tuple[ImageComparison, ...]:
        return tuple(c for c in self.comparisons if not c.equal)

    @property
    def equal(self) -> int:
        return sum(1 for c in self.comparisons if c.equal)

    def detail(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "equal": self.equal,
            "different": [
                {
                    "sop_uid": c.sop_uid,
                    "differences": [
                        {
                            "tag": d.tag,
                            "keyword": d.keyword,
                            "expected": d.expected,
                            "found": d.found,
                        }
                        for d in c.differences
                    ],
                }
                for c in self.different
            ],
            "errors": [{"sop_uid": e.sop_uid, "reason": e.reason} for e in self.errors],
            # Equal within a tolerance (planned lossy transcode, or lossy source decoded by
            # another codec): counted in "equal", with the measurement.
            "within_tolerance": [
                {"sop_uid": c.sop_uid, "note": c.note}
                for c in self.comparisons
                if c.equal and c.note
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentCheck:
    requested: int
    committed: int
    failed: tuple[InstanceProblem, ...] = ()
    timed_out: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.timed_out and not self.failed and self.committed == self.requested

    def detail(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "committed": self.committed,
            "failed": [{"sop_uid": f.sop_uid, "reason": f.reason} for f in self.failed],
            "timed_out": self.timed_out,
        }
