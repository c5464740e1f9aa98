"""Read the HIS/RIS order list (CSV or HL7 v2) and a person's match overrides.

Every reader is all-or-nothing: a row or message that cannot be read is an ``InputError``
naming the file and line, never a silently shorter list, because a dropped order turns into a
study that migrates unmatched (or, worse, into a neighbour's order becoming the only
candidate). Error messages name columns and fields but never echo values: they are patient
data and end up in terminals and CI logs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Final

import hl7

from pacsmig.errors import InputError, SpecError
from pacsmig.reconcile.normalize import (
    clean,
    id_key,
    normalize_date,
    normalize_id,
    normalize_modality,
    normalize_pn,
    normalize_sex,
    normalize_text,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """One imaging order, every value already canonical (see ``normalize``)."""

    order_id: str
    accession: str = ""
    patient_id: str = ""
    patient_name: str = ""  # canonical DICOM PN
    birth_date: str = ""  # YYYYMMDD or ''
    sex: str = ""  # 'M', 'F', 'O' or ''
    study_date: str = ""  # YYYYMMDD or ''
    modality: str = ""
    description: str = ""
    # Where the order was read (CSV record or first line of its first HL7 message), so a
    # person fixing the RIS export can find it; 0 for orders built in code.
    line: int = 0


ORDER_FIELDS: Final = (
    "order_id",
    "accession",
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "study_date",
    "modality",
    "description",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RisColumns:
    """Which CSV column holds each order attribute; None when the export lacks it."""

    order_id: str = "order_id"
    accession: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    study_date: str | None = None
    modality: str | None = None
    description: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> RisColumns:
        """The spec's ``ris.columns`` block; unknown keys are a ``SpecError``."""
        unknown = sorted(set(mapping) - set(ORDER_FIELDS))
        if unknown:
            raise SpecError(f"ris.columns: unknown key {unknown[0]!r}")
        for key, column in mapping.items():
            if not isinstance(column, str) or not column.strip():
                raise SpecError(f"ris.columns.{key}: must be a non-empty column name")
        return cls(**{k: v.strip() for k, v in mapping.items()})

    def mapped(self) -> list[tuple[str, str]]:
        """(order field, column name) for every field the export provides."""
        out = []
        for f in fields(self):
            column = getattr(self, f.name)
            if column is not None:
                out.append((f.name, column))
        return out


class _FieldError(ValueError):
    """A value that cannot be normalised, tagged with the order field it belongs to."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


_NORMALISERS: Final[dict[str, Callable[[str], str]]] = {
    "order_id": normalize_id,
    "accession": normalize_id,
    "patient_id": normalize_id,
    "patient_name": normalize_pn,
    "birth_date": normalize_date,
    "sex": normalize_sex,
    "study_date": normalize_date,
    "modality": normalize_modality,
    "description": normalize_text,
}


def _make_order(raw: Mapping[str, str], line: int) -> Order:
    values: dict[str, str] = {}
    for name, value in raw.items():
        try:
            values[name] = _NORMALISERS[name](value)
        except ValueError as exc:
            raise _FieldError(name, str(exc)) from None
    if not values.get("order_id"):
        raise _FieldError("order_id", "missing order id")
    return Order(line=line, **values)


def _read_text(path: Path, encoding: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path.name} line {line}: not valid {encoding} text") from None
    except LookupError:
        raise InputError(f"{path.name}: unknown text encoding {encoding!r}") from None


# ---------------------------------------------------------------------------------------
# CSV

# Tried in this order; the first one whose header holds every mapped column wins. RIS
# exports come out of spreadsheets and databases in all of these.
_DELIMITERS: Final = (",", ";", "\t", "|")


def _header_key(name: str) -> str:
    return name.strip().casefold()


def _pick_delimiter(first_line: str, wanted: list[str]) -> str:
    keys = {_header_key(c) for c in wanted}
    for delimiter in _DELIMITERS:
        header = next(csv.reader([first_line], delimiter=delimiter), [])
        if keys <= {_header_key(h) for h in header}:
            return delimiter
    return ","


def csv_records(
    path: Path, encoding: str, columns: Sequence[str]
) -> tuple[int, list[str], Iterator[tuple[int, list[str]]]]:
    """Open a CSV export: (header line number, header cells, numbered data records).

    The delimiter is the first of , ; TAB | under which the header holds all `columns`.
    """
    text = _read_text(path, encoding)
    first_line = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first_line:
        raise InputError(f"{path.name}: empty file, no header")
    delimiter = _pick_delimiter(first_line, list(columns))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows = _numbered_rows(reader, path.name)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise InputError(f"{path.name}: empty file, no header") from None
    return header_line, header, rows


def read_orders_csv(
    path: str | Path,
    columns: Mapping[str, str] | RisColumns,
    *,
    encoding: str = "utf-8-sig",
) -> list[Order]:
    """Every order in a CSV export, in file order.

    Column names are matched ignoring case and surrounding blanks; the delimiter is the
    first of , ; TAB | under which the header holds all mapped columns. Blank lines are
    skipped. Anything else that does not read (wrong field count, bad date, unknown sex
    code, missing or duplicate order id) is an ``InputError`` with the record's first line.
    """
    path = Path(path)
    mapping = columns if isinstance(columns, RisColumns) else RisColumns.from_mapping(columns)
    wanted = mapping.mapped()
    header_line, header, rows = csv_records(path, encoding, [c for _, c in wanted])

    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(_header_key(name), i)
    positions: dict[str, int] = {}
    for field, column in wanted:
        key = _header_key(column)
        if key not in index:
            raise InputError(
                f"{path.name} line {header_line}: column {column!r} ({field}) not in the header"
            )
        if sum(1 for h in header if _header_key(h) == key) > 1:
            raise InputError(
                f"{path.name} line {header_line}: column {column!r} appears more than once"
            )
        positions[field] = index[key]

    orders: list[Order] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(
                f"{path.name} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        try:
            order = _make_order({f: row[i] for f, i in positions.items()}, line)
        except _FieldError as exc:
            column = dict(wanted)[exc.field]
            raise InputError(f"{path.name} line {line}: {column}: {exc.problem}") from None
        key = id_key(order.order_id)
        if key in seen:
            raise InputError(
                f"{path.name} line {line}: duplicate order id (first on line {seen[key]})"
            )
        seen[key] = line
        orders.append(order)
    return orders


def _numbered_rows(reader: Iterator[list[str]], name: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank records with the physical line each starts on (quoted fields may span lines)."""
    line_num: int = getattr(reader, "line_num", 0)
    while True:
        start = line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{name} line {start}: unreadable CSV ({exc})") from None
        line_num = getattr(reader, "line_num", line_num)
        if not row or all(not cell.strip() for cell in row):
            continue
        yield start, row


# ---------------------------------------------------------------------------------------
# HL7 v2

_SEGMENT_ID: Final = re.compile(r"[A-Z][A-Z0-9]{2}")
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_MLLP: Final = re.compile(r"([\x0b\x1c])")
# TS/DTM: a date must be at least to the day; hours, fraction and offset are dropped because
# orders are compared by day.
_TS: Final = re.compile(r"([0-9]{8})(?:[0-9]{2,6}(?:\.[0-9]{1,4})?)?(?:[+-][0-9]{4})?")
_ORDER_MESSAGES: Final = frozenset({"ORM", "ORU", "OMI", "OMG"})
_ENVELOPE: Final = frozenset({"FHS", "BHS", "FTS", "BTS"})
_HL7_NULL: Final = '""'


@dataclass(slots=True)
class _RawMessage:
    line: int
    segments: list[str]


def _split_messages(text: str, name: str) -> list[_RawMessage]:
    """Messages in a file, split at MSH, blank lines and MLLP framing bytes.

    Segments may end in CR, LF or CRLF; line numbers count any of them, as editors do.
    """
    messages: list[_RawMessage] = []
    current: _RawMessage | None = None
    for line_no, line in enumerate(_LINE_BREAK.split(text), start=1):
        if not line.strip():
            current = None
            continue
        for part in _MLLP.split(line):
            if part in ("\x0b", "\x1c"):
                current = None
                continue
            segment = part.strip()
            if not segment:
                continue
            sid = segment[:3]
            if sid in _ENVELOPE:
                current = None
            elif sid == "MSH":
                current = _RawMessage(line_no, [segment])
                messages.append(current)
            elif current is None:
                raise InputError(f"{name} line {line_no}: segment outside a message (no MSH)")
            else:
                current.segments.append(segment)
    return messages


def _get(segment: hl7.Segment, field: int, component: int = 1, sub: int = 1) -> str:
    """One value from the first repetition, '' when absent or the HL7 null ``""``."""
    try:
        value = str(segment.extract_field(1, field, 1, component, sub))
    except IndexError:
        return ""
    value = value.strip()
    return "" if value == _HL7_NULL else value


def _ts_date(value: str) -> str:
    text = clean(value)
    if not text:
        return ""
    m = _TS.fullmatch(text)
    if m is None:
        raise ValueError("not an HL7 date/time precise to the day")
    return normalize_date(m.group(1))


@dataclass(slots=True)
class _Group:
    orc: hl7.Segment | None = None
    obr: hl7.Segment | None = None
    ipc: hl7.Segment | None = None


def _first(*values: str) -> str:
    return next((v for v in values if v), "")


def _message_orders(msg: hl7.Message, first_line: int, name: str) -> list[tuple[Order, bool]]:
    """The orders in one message, each with whether its accession is only the filler number."""

    def bad(what: str) -> InputError:
        return InputError(f"{name} line {first_line}: {what}")

    msh = msg.segment("MSH")
    kind = _get(msh, 9, 1)
    if kind not in _ORDER_MESSAGES:
        raise bad("not an order message (MSH-9 must be ORM, ORU, OMI or OMG)")

    pids = [s for s in msg if str(s[0]) == "PID"]
    if len(pids) != 1:
        raise bad(f"{len(pids)} PID segments, an order message needs exactly one")
    groups: list[_Group] = []
    for seg in msg:
        sid = str(seg[0])
        if sid == "ORC":
            groups.append(_Group(orc=seg))
        elif sid == "OBR":
            if groups and groups[-1].obr is None:
                groups[-1].obr = seg
            else:  # ORU: every OBR is its own order
                groups.append(_Group(obr=seg))
        elif sid == "IPC" and groups:
            groups[-1].ipc = groups[-1].ipc or seg
    if not groups:
        raise bad("no ORC or OBR segment")

    pid = pids[0]
    # XPN is family^given^middle^suffix^prefix; DICOM PN puts prefix before suffix.
    family, given, middle = _get(pid, 5, 1), _get(pid, 5, 2), _get(pid, 5, 3)
    suffix, prefix = _get(pid, 5, 4), _get(pid, 5, 5)
    patient = {
        "patient_id": _get(pid, 3, 1),
        "patient_name": "^".join([family, given, middle, prefix, suffix]),
        "sex": _get(pid, 8),
    }
    labels = {
        "patient_id": "PID-3",
        "patient_name": "PID-5",
        "birth_date": "PID-7",
        "sex": "PID-8",
        "order_id": "ORC-2/OBR-2",
        "study_date": "OBR-7",
    }
    try:
        birth_date = _ts_date(_get(pid, 7))
    except ValueError as exc:
        raise bad(f"PID-7: {exc}") from None

    orders: list[tuple[Order, bool]] = []
    for g in groups:
        orc, obr, ipc = g.orc, g.obr, g.ipc

        def val(seg: hl7.Segment | None, field: int, component: int = 1) -> str:
            return "" if seg is None else _get(seg, field, component)

        filler = _first(val(orc, 3), val(obr, 3))
        try:
            # OBR-7 is when the exam was done (ORU, some ORM); OBR-36 and the TQ start
            # (OBR-27.4, ORC-7.4) are when it is scheduled. ORC-9 is deliberately not used:
            # it is when the message was made, often weeks before the exam.
            study_date = _first(
                *(_ts_date(v) for v in (val(obr, 7), val(obr, 36), val(obr, 27, 4), val(orc, 7, 4)))
            )
        except ValueError as exc:
            raise bad(f"OBR-7/OBR-36/OBR-27/ORC-7: {exc}") from None
        # IHE SWF: OBR-18 in v2.3 feeds, IPC-1 in OMI; else the filler number is what the
        # RIS hands the modality as accession.
        accession = _first(val(obr, 18), val(ipc, 1))
        raw = {
            **patient,
            "order_id": _first(val(orc, 2), val(obr, 2), filler),
            "accession": accession or filler,
            "birth_date": birth_date,
            "study_date": study_date,
            "modality": _first(val(obr, 24), val(ipc, 5)),
            "description": _first(val(obr, 4, 2), val(obr, 4, 1)),
        }
        try:
            order = _make_order(raw, first_line)
        except _FieldError as exc:
            raise bad(f"{labels.get(exc.field, exc.field)}: {exc.problem}") from None
        orders.append((order, not accession))
    return orders


def _merge(old: Order, new: Order, *, weak_accession: bool) -> Order:
    """A later message about the same order: its non-empty values are the current ones.

    Except an accession that is only the filler-number fallback: a status update without
    OBR-18 must not overwrite the accession an earlier message stated.
    """
    changed = {f: getattr(new, f) for f in ORDER_FIELDS if getattr(new, f) and f != "order_id"}
    if weak_accession and old.accession:
        changed.pop("accession", None)
    return replace(old, **changed)


def read_orders_hl7(path: str | Path, *, encoding: str = "utf-8") -> list[Order]:
    """Every order in a file of HL7 v2 ORM^O01 / ORU^R01 (or OMI/OMG) messages.

    Messages are separated by blank lines, MLLP framing (VT ... FS CR) or simply by the next
    MSH; segments end in CR, LF or CRLF; FHS/BHS batch envelopes are ignored. A feed
    carries the same order several times (new, changed, resulted): those messages are folded
    into one order, later non-empty values winning, with the line of its first message.
    Cancelled orders are kept: a cancelled order that was performed anyway must still be
    matchable, and an extra candidate can only cause a hold, never a wrong match.
    """
    path = Path(path)
    text = _read_text(path, encoding)
    by_id: dict[str, Order] = {}
    for raw in _split_messages(text, path.name):
        if len(raw.segments[0]) < 8:
            raise InputError(f"{path.name} line {raw.line}: malformed MSH segment")
        sep = raw.segments[0][3]
        for seg in raw.segments:
            if not _SEGMENT_ID.fullmatch(seg[:3]) or (len(seg) > 3 and seg[3] != sep):
                raise InputError(f"{path.name} line {raw.line}: malformed HL7 segment")
        try:
            msg = hl7.parse("\r".join(raw.segments))
        except Exception:  # python-hl7 raises whatever its splitting trips over
            raise InputError(f"{path.name} line {raw.line}: malformed HL7 message") from None
        for order, weak_accession in _message_orders(msg, raw.line, path.name):
            key = id_key(order.order_id)
            old = by_id.get(key)
            by_id[key] = order if old is None else _merge(old, order, weak_accession=weak_accession)
    return list(by_id.values())


# ---------------------------------------------------------------------------------------
# Overrides

_UID: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
SKIP: Final = "skip"


def read_overrides(path: str | Path, *, encoding: str = "utf-8-sig") -> dict[str, str | None]:
    """A person's decisions: study UID -> order id, or None for ``skip``.

    Rows are ``study_uid,order_id`` or ``study_uid,skip``; an optional ``study_uid,...``
    header, blank lines and ``#`` comment lines are allowed. A malformed UID (it catches
    swapped columns), a missing second value, extra fields, or a study listed twice are
    errors: a decision that cannot be read must not be replaced by a rule's guess.
    """
    path = Path(path)
    text = _read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: dict[str, str | None] = {}
    seen: dict[str, int] = {}
    first = True
    for line, row in _numbered_rows(reader, path.name):
        if row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if first and cells[0].casefold() == "study_uid":
            first = False
            continue
        first = False
        if len(cells) != 2:
            raise InputError(f"{path.name} line {line}: {len(cells)} fields, expected 2")
        uid, target = cells
        if not _UID.fullmatch(uid) or len(uid) > 64:
            raise InputError(f"{path.name} line {line}: study_uid is not a DICOM UID")
        if not target:
            raise InputError(f"{path.name} line {line}: missing order id (or 'skip')")
        if uid in seen:
            raise InputError(
                f"{path.name} line {line}: study listed twice (first on line {seen[uid]})"
            )
        seen[uid] = line
        out[uid] = None if target.casefold() == SKIP else normalize_id(target)
    return out
