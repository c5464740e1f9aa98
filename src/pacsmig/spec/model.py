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


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesystemSource:
    """Files read directly from legacy storage: RAID, tape or disc dumps, DICOMDIR media."""

    kind: Literal["filesystem"] = "filesystem"
    roots: tuple[Path, ...]
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()
    workers: int | None = None

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
class Spec:
    version: int
    name: str
    local: LocalAE
    source: DimseSource | FilesystemSource
    destination: Endpoint
    select: Select = field(default_factory=Select)
    journal: Path | None = None
    ris: RisSpec | None = None
    # The validated document as plain data: it is embedded in the plan so a saved plan
    # carries its inputs.
    document: dict[str, Any] = field(default_factory=dict, compare=False)
    base_dir: Path = field(default=Path("."), compare=False)
