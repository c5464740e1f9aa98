"""The order apply migrates studies in: the spec's ``priority``. Pure but for reading the
patients file and the orders file named in the spec.

Studies of patients with upcoming appointments go first (their priors are needed on day
one), then by a column of the RIS orders (e.g. urgency), then by study date. Holds stay at
the top of the plan, where a person sees them, and skips at the bottom.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from pacsmig.errors import InputError, SpecError
from pacsmig.plan.model import StudyAction
from pacsmig.reconcile.normalize import id_key, normalize_id

# The orders file is read with exactly the conventions of the order reader (encoding,
# delimiter detection, header matching, record line numbers), so the column seen here is the
# one a person sees in the same export.
from pacsmig.reconcile.orders import _header_key, _read_text, csv_records
from pacsmig.spec.model import Priority, RisSpec

PATIENT_COLUMN: Final = "patient_id"
_DELIMITERS: Final = (",", ";", "\t", "|")
APPOINTMENT: Final = "appointment"


def file_digest(path: Path) -> dict[str, str]:
    """What the plan header records of an input file: its name and sha256."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def read_patients(path: str | Path) -> frozenset[str]:
    """Patient IDs with upcoming appointments.

    Either one patient ID per line, or a CSV whose header has a ``patient_id`` column
    (detected by the first line that is neither blank nor a ``#`` comment). Blank lines and
    comments are skipped everywhere. Errors name the file and line, never the value.
    """
    path = Path(path)
    text = _read_text(path, "utf-8-sig")
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return frozenset()
    header_line, header_text = lines[0]
    delimiter, column = _patient_column(header_text)
    if column is None:
        if any(d in header_text for d in _DELIMITERS):
            raise InputError(
                f"{path.name} line {header_line}: no {PATIENT_COLUMN!r} column in the header "
                "(a CSV needs one; a plain list has one patient ID per line)"
            )
        return frozenset(_plain_ids(lines, path.name))
    ids: set[str] = set()
    width = len(_split(header_text, delimiter, path.name, header_line))
    for number, line in lines[1:]:
        row = _split(line, delimiter, path.name, number)
        if len(row) != width:
            raise InputError(
                f"{path.name} line {number}: {len(row)} fields, the header has {width}"
            )
        value = normalize_id(row[column])
        if not value:
            raise InputError(f"{path.name} line {number}: {PATIENT_COLUMN} is empty")
        ids.add(value)
    return frozenset(ids)


def _plain_ids(lines: list[tuple[int, str]], name: str) -> set[str]:
    ids: set[str] = set()
    for number, line in lines:
        value = normalize_id(line)
        if not value:  # "NULL", "N/A": a placeholder, not an ID
            raise InputError(f"{name} line {number}: not a patient ID (an empty-value token)")
        ids.add(value)
    return ids


def _patient_column(header: str) -> tuple[str, int | None]:
    for delimiter in _DELIMITERS:
        cells = next(csv.reader([header], delimiter=delimiter), [])
        keys = [_header_key(c) for c in cells]
        if PATIENT_COLUMN in keys:
            return delimiter, keys.index(PATIENT_COLUMN)
    return ",", None


def _split(line: str, delimiter: str, name: str, number: int) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error as exc:
        raise InputError(f"{name} line {number}: unreadable CSV ({exc})") from None


def order_column_values(ris: RisSpec, column: str) -> dict[str, str]:
    """order_id -> value of ``column`` in the CSV orders file, for every order.

    Order IDs are normalised as the order reader does, so they equal the ``order_id`` of a
    plan action's match. HL7 orders have no columns: a ``SpecError``.
    """
    if ris.format != "csv":
        raise SpecError(
            "priority.orders_column: needs ris.format csv (HL7 orders have no columns; "
            "use a CSV export of the orders)"
        )
    path = ris.orders
    id_column = ris.columns.get("order_id", "order_id")
    header_line, header, rows = csv_records(path, "utf-8-sig", [id_column, column])
    keys = [_header_key(h) for h in header]
    positions = []
    for name, what in ((id_column, "order_id"), (column, "priority.orders_column")):
        if _header_key(name) not in keys:
            raise InputError(
                f"{path.name} line {header_line}: column {name!r} ({what}) not in the header"
            )
        positions.append(keys.index(_header_key(name)))
    id_at, value_at = positions
    values: dict[str, str] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(
                f"{path.name} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        order_id = normalize_id(row[id_at])
        if not order_id:
            raise InputError(f"{path.name} line {line}: {id_column}: missing order id")
        values[order_id] = row[value_at].strip()
    return values


def _rank(value: str | None, wanted: Sequence[str]) -> tuple[int, float, str]:
    """Sort key of an orders-column value: listed values in their order, else numbers
    ascending, then other text, then studies without a value."""
    if value is None or not value:
        return (3, 0.0, "")
    key = value.casefold()
    if wanted:
        listed = [w.casefold() for w in wanted]
        return (0, float(listed.index(key)), "") if key in listed else (2, 0.0, key)
    try:
        number = float(value)
    except ValueError:
        return (2, 0.0, key)
    if number != number:  # NaN sorts nowhere
        return (2, 0.0, key)
    return (1, number, "")


def _label_value(value: str, wanted: Sequence[str]) -> str:
    for w in wanted:
        if w.casefold() == value.casefold():
            return w
    return value


def prioritise(
    actions: Sequence[StudyAction],
    priority: Priority,
    *,
    patients: frozenset[str] = frozenset(),
    order_values: Mapping[str, str] | None = None,
) -> tuple[StudyAction, ...]:
    """Holds, then migrate actions in priority order (labelled with why), then skips.

    Migrate actions: studies of ``patients`` first (matched on the Patient ID at the source
    or the one the plan corrects it to), then by the orders column (``order_values``:
    order_id -> value, ranked by ``priority.orders_values`` or numerically), then by study
    date per ``priority.order``, then by Study Instance UID. ``as-found`` keeps the input
    order where the rest ties. Holds and skips are ordered by date and UID.
    """
    values = order_values or {}
    appointment_keys = {id_key(p) for p in patients}
    appointment_keys.discard("")

    def has_appointment(a: StudyAction) -> bool:
        return bool(
            appointment_keys
            and (
                id_key(a.patient_id) in appointment_keys
                or id_key(a.expected_value("PatientID", a.patient_id)) in appointment_keys
            )
        )

    def column_value(a: StudyAction) -> str | None:
        if not priority.orders_column or not a.match:
            return None
        order_id = a.match.get("order_id")
        return values.get(order_id) if isinstance(order_id, str) else None

    holds = sorted((a for a in actions if a.action == "hold"), key=_date_uid)
    skips = sorted((a for a in actions if a.action == "skip"), key=_date_uid)
    migrate = [a for a in actions if a.action == "migrate"]
    # Stable sorts from the weakest key to the strongest.
    if priority.order != "as-found":
        migrate.sort(key=lambda a: a.study_uid)
        migrate.sort(key=lambda a: a.study_date, reverse=priority.order == "newest-first")
        migrate.sort(key=lambda a: not a.study_date)  # undated studies last either way
    migrate.sort(
        key=lambda a: (not has_appointment(a), _rank(column_value(a), priority.orders_values))
    )
    labelled = []
    for a in migrate:
        value = column_value(a)
        if has_appointment(a):
            label = APPOINTMENT
        elif value:
            label = f"orders:{_label_value(value, priority.orders_values)}"
        else:
            label = ""
        labelled.append(a if a.priority == label else replace(a, priority=label))
    # A label explains a place in the migration order; studies that do not move have none.
    unlabelled = [a if not a.priority else replace(a, priority="") for a in (*holds, *skips)]
    return (*unlabelled[: len(holds)], *labelled, *unlabelled[len(holds) :])


def _date_uid(a: StudyAction) -> tuple[str, str]:
    return (a.study_date, a.study_uid)


def describe_priority(actions: Sequence[StudyAction], priority: Priority) -> str:
    """One line for ``show``, e.g. 'priority: 12 studies of patients with appointments
    first, then by urgency (STAT, URGENT, ROUTINE), then newest first'."""
    migrate = [a for a in actions if a.action == "migrate"]
    parts = []
    if priority.patients is not None:
        n = sum(1 for a in migrate if a.priority == APPOINTMENT)
        parts.append(f"{n:,} {'study' if n == 1 else 'studies'} of patients with appointments")
    if priority.orders_column:
        n = sum(1 for a in migrate if a.priority.startswith("orders:"))
        ranking = (
            ", ".join(priority.orders_values) if priority.orders_values else "numbers ascending"
        )
        parts.append(f"by {priority.orders_column} ({ranking}; {n:,} studies with a value)")
    parts.append(
        {
            "newest-first": "newest first",
            "oldest-first": "oldest first",
            "as-found": "in the order found",
        }[priority.order]
    )
    if len(parts) > 1 and priority.patients is not None:
        parts[0] += " first"
    return "priority: " + ", then ".join(parts)
