"""Frozen values for a validated spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """PEM files for DICOM TLS: ca to verify the peer, cert and key to present ourselves."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAE:
    ae_title: str
    port: int | None = None
    bind: str = ""
    tls: TlsFiles | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A remote DICOM application entity."""

    ae_title: str
    host: str
    port: int
    timeout: float = DEFAULT_TIMEOUT
    max_pdu: int = 0
    tls: TlsFiles | None = None

    def describe(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DimseSource(Endpoint):
    kind: Literal["dimse"] = "dimse"
    retrieve: Literal["c-get", "c-move"] = "c-get"
    find_limit: int | None = None  # most answers the source gives to one C-FIND, if capped
    parallel: int = 1  # studies retrieved at once


@dataclass(frozen=True, slots=True, kw_only=True)
class LossyPolicy:
    """Explicit permission to compress lossily for one destination (never implied)."""

    syntax: str  # transfer syntax UID: JPEG 2000 (lossy) or JPEG-LS near-lossless
    quality: int | None = None  # JPEG 2000: compression ratio; JPEG-LS: NEAR (max error)


Route = Literal["auto", "relay", "direct"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination(Endpoint):
    move_ae: str | None = None  # AE title the source knows the destination by (direct route)
    route: Route = "auto"
    associations: int = 1  # C-STORE associations at once
    # Transfer syntax UIDs the destination should receive, in order of preference; empty:
    # as stored, converted losslessly only when the destination refuses the stored one.
    syntaxes: tuple[str, ...] = ()
    lossy: LossyPolicy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesystemSource:
    """Files read directly from legacy storage: RAID, tape or disc dumps, DICOMDIR media."""

    kind: Literal["filesystem"] = "filesystem"
    roots: tuple[Path, ...]
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()
    workers: int | None = None
    parallel: int = 1  # studies read at once

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    date_from: str | None = None  # YYYYMMDD
    date_to: str | None = None
    modalities: tuple[str, ...] = ()

    def date_range(self) -> str:
        """DICOM DA range matching value, '' for no restriction (PS3.4 C.2.2.2.5)."""
        if not self.date_from and not self.date_to:
            return ""
        return f"{self.date_from or ''}-{self.date_to or ''}"


DEFAULT_CORRECT = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDescription",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RisSpec:
    """HIS/RIS reconciliation settings; paths are resolved against the spec's folder."""

    orders: Path
    format: Literal["csv", "hl7"] = "csv"
    columns: dict[str, str] = field(default_factory=dict)
    match: tuple[dict[str, Any], ...] = ()
    unmatched: Literal["hold", "migrate-as-is"] = "hold"
    overrides: Path | None = None
    correct: tuple[str, ...] = DEFAULT_CORRECT


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleWindow:
    """When pacsmig may pull from the source, and how fast (None: no cap)."""

    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)  # 0 = Monday
    start: int = 0  # minutes after midnight, inclusive
    end: int = 24 * 60  # minutes after midnight, exclusive; end <= start spans midnight
    max_instances_per_second: float | None = None
    max_mb_per_second: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    windows: tuple[ScheduleWindow, ...] = ()  # empty: any time, no cap
    timezone: str | None = None  # IANA name; None: the machine's local time


PriorityOrder = Literal["newest-first", "oldest-first", "as-found"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Priority:
    """How apply orders the studies it migrates (the plan is written in this order)."""

    patients: Path | None = None  # patient IDs with upcoming appointments go first
    orders_column: str | None = None  # then by this column of the orders file
    orders_values: tuple[str, ...] = ()  # that column's values, most urgent first
    order: PriorityOrder = "newest-first"  # then by study date


VERIFY_LEVELS = ("counts", "instances", "attributes", "images", "commitment")
DEFAULT_VERIFY_LEVELS = ("counts", "instances", "attributes")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifySpec:
    levels: tuple[str, ...] = DEFAULT_VERIFY_LEVELS
    image_sample_fraction: float | None = None  # image_sample given as a fraction (0, 1]
    image_sample_count: int | None = None  # image_sample given as a whole number
    commitment_timeout: float = 60.0

    def has(self, level: str) -> bool:
        return level in self.levels


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    version: int
    name: str
    local: LocalAE
    source: DimseSource | FilesystemSource
    destination: Destination
    select: Select = field(default_factory=Select)
    journal: Path | None = None
    ris: RisSpec | None = None
    schedule: Schedule = field(default_factory=Schedule)
    priority: Priority = field(default_factory=Priority)
    verify: VerifySpec = field(default_factory=VerifySpec)
    # The validated document as plain data: it is embedded in the plan so a saved plan
    # carries its inputs.
    document: dict[str, Any] = field(default_factory=dict, compare=False)
    base_dir: Path = field(default=Path("."), compare=False)
