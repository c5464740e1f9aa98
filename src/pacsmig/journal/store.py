"""SQLite journal, WAL mode, one writer (the thread that opened it). Bound parameters only."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsmig.errors import InputError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  run_id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  plan_fingerprint TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  outcome TEXT,
  approval TEXT
);
CREATE TABLE IF NOT EXISTS instances(
  sop_uid TEXT PRIMARY KEY,
  study_uid TEXT NOT NULL,
  series_uid TEXT NOT NULL,
  sop_class_uid TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  code INTEGER,
  reason TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  run_id INTEGER
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS studies(
  study_uid TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL,
  run_id INTEGER
);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  run_id INTEGER,
  study_uid TEXT NOT NULL DEFAULT '',
  sop_uid TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL,
  code INTEGER,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS verifications(
  run_id INTEGER NOT NULL,
  study_uid TEXT NOT NULL,
  status TEXT NOT NULL,
  expected_instances INTEGER NOT NULL,
  found_instances INTEGER NOT NULL,
  detail TEXT NOT NULL,
  at TEXT NOT NULL,
  PRIMARY KEY(run_id, study_uid)
);
CREATE INDEX IF NOT EXISTS verifications_by_study ON verifications(study_uid);
"""

# Instance states. Final ones: sent, present (skipped: already at the destination), failed.
PLANNED, SENT, PRESENT, FAILED, MISSING = "planned", "sent", "present", "failed", "missing"
# Reasons verify gives a MISSING instance that the destination still lists: apply must send
# it again even so (not committed, or its copy there differs from the source's).
NOT_COMMITTED, DIFFERS_AT_DESTINATION = "not_committed", "differs_at_destination"
RESEND_REASONS = (NOT_COMMITTED, DIFFERS_AT_DESTINATION)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRow:
    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    state: str
    code: int | None
    reason: str
    detail: str
    attempts: int
    updated_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    run_id: int
    kind: str
    plan_fingerprint: str
    started_at: str
    finished_at: str | None
    outcome: str | None
    approval: dict[str, Any] | None


class Journal:
    """Open with Journal.open(path); use from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._batched = False

    @classmethod
    def open(cls, path: str | Path) -> Journal:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL survives a process crash (kill -9); only power loss can lose the
            # last commits, and apply re-checks the destination before sending anyway.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise InputError(f"{path}: journal schema {row[0]} is newer than this pacsmig")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: cannot open the journal: {exc}") from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, kind: str, plan_fingerprint: str, approval: dict[str, Any] | None) -> int:
        cur = self._conn.execute(
            "INSERT INTO runs(kind, plan_fingerprint, started_at, approval) VALUES(?,?,?,?)",
            (kind, plan_fingerprint, now(), json.dumps(approval) if approval else None),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str) -> None:
        self._conn.execute(
            "UPDATE runs SET finished_at=?, outcome=? WHERE run_id=?", (now(), outcome, run_id)
        )

    def runs(self, kind: str | None = None) -> list[RunRow]:
        sql = "SELECT run_id, kind, plan_fingerprint, started_at, finished_at, outcome, approval FROM runs"
        params: tuple[Any, ...] = ()
        if kind:
            sql += " WHERE kind=?"
            params = (kind,)
        rows = self._conn.execute(sql + " ORDER BY run_id", params).fetchall()
        return [
            RunRow(
                run_id=r[0],
                kind=r[1],
                plan_fingerprint=r[2],
                started_at=r[3],
                finished_at=r[4],
                outcome=r[5],
                approval=json.loads(r[6]) if r[6] else None,
            )
            for r in rows
        ]

    # -- instances ----------------------------------------------------------------------
    def plan_instances(
        self, run_id: int, study_uid: str, items: Iterable[tuple[str, str, str]]
    ) -> None:
        """Record (sop_uid, series_uid, sop_class) known at the source; keep existing states."""
        at = now()
        with self._tx():
            self._conn.executemany(
                "INSERT INTO instances(sop_uid, study_uid, series_uid, sop_class_uid, state, "
                "updated_at, run_id) VALUES(?,?,?,?,?,?,?) ON CONFLICT(sop_uid) DO UPDATE SET "
                "sop_class_uid=CASE WHEN excluded.sop_class_uid<>'' THEN excluded.sop_class_uid "
                "ELSE instances.sop_class_uid END",
                [(sop, study_uid, series, cls, PLANNED, at, run_id) for sop, series, cls in items],
            )

    def set_instance(
        self,
        run_id: int,
        sop_uid: str,
        state: str,
        *,
        code: int | None = None,
        reason: str = "",
        detail: str = "",
        attempt: bool = False,
    ) -> None:
        at = now()
        with self._tx():
            self._conn.execute(
                "UPDATE instances SET state=?, code=?, reason=?, detail=?, updated_at=?, run_id=?, "
                "attempts=attempts+? WHERE sop_uid=?",
                (state, code, reason, detail, at, run_id, 1 if attempt else 0, sop_uid),
            )
            self._conn.execute(
                "INSERT INTO events(at, run_id, sop_uid, kind, code, detail) VALUES(?,?,?,?,?,?)",
                (at, run_id, sop_uid, state if not reason else f"{state}:{reason}", code, detail),
            )

    def set_instances(
        self, run_id: int, sop_uids: Iterable[str], state: str, reason: str = ""
    ) -> None:
        at = now()
        with self._tx():
            self._conn.executemany(
                "UPDATE instances SET state=?, reason=?, code=NULL, detail='', updated_at=?, run_id=? "
                "WHERE sop_uid=?",
                [(state, reason, at, run_id, uid) for uid in sop_uids],
            )

    def instances(self, study_uid: str | None = None) -> list[InstanceRow]:
        sql = (
            "SELECT sop_uid, study_uid, series_uid, sop_class_uid, state, code, reason, detail, "
            "attempts, updated_at FROM instances"
        )
        params: tuple[Any, ...] = ()
        if study_uid is not None:
            sql += " WHERE study_uid=?"
            params = (study_uid,)
        return [
            InstanceRow(
                sop_uid=r[0],
                study_uid=r[1],
                series_uid=r[2],
                sop_class_uid=r[3],
                state=r[4],
                code=r[5],
                reason=r[6],
                detail=r[7],
                attempts=r[8],
                updated_at=r[9],
            )
            for r in self._conn.execute(sql + " ORDER BY study_uid, series_uid, sop_uid", params)
        ]

    def claimed_by_other_studies(self, study_uid: str, sop_uids: list[str]) -> dict[str, str]:
        """sop_uid -> other study_uid, for instances the journal knows under another study."""
        out: dict[str, str] = {}
        for i in range(0, len(sop_uids), 500):
            chunk = sop_uids[i : i + 500]
            # Only '?' placeholders are interpolated; every value is a bound parameter.
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT sop_uid, study_uid FROM instances WHERE sop_uid IN ({marks}) "  # noqa: S608  # nosec B608
            rows = self._conn.execute(sql + "AND study_uid<>?", (*chunk, study_uid))
            out.update({r[0]: r[1] for r in rows})
        return out

    def instance_state_counts(self) -> dict[tuple[str, str], int]:
        """(study_uid, state) -> count."""
        rows = self._conn.execute(
            "SELECT study_uid, state, COUNT(*) FROM instances GROUP BY study_uid, state"
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # -- studies ------------------------------------------------------------------------
    def set_study(
        self, run_id: int, study_uid: str, state: str, reason: str = "", detail: str = ""
    ) -> None:
        at = now()
        with self._tx():
            self._conn.execute(
                "INSERT INTO studies(study_uid, state, reason, detail, updated_at, run_id) "
                "VALUES(?,?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET state=excluded.state, "
                "reason=excluded.reason, detail=excluded.detail, updated_at=excluded.updated_at, "
                "run_id=excluded.run_id",
                (study_uid, state, reason, detail, at, run_id),
            )
            self._conn.execute(
                "INSERT INTO events(at, run_id, study_uid, kind, detail) VALUES(?,?,?,?,?)",
                (
                    at,
                    run_id,
                    study_uid,
                    f"study_{state}" + (f":{reason}" if reason else ""),
                    detail,
                ),
            )

    def studies(self) -> dict[str, tuple[str, str, str, str]]:
        """study_uid -> (state, reason, detail, updated_at)."""
        rows = self._conn.execute(
            "SELECT study_uid, state, reason, detail, updated_at FROM studies"
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    # -- events -------------------------------------------------------------------------
    def event(
        self,
        run_id: int,
        kind: str,
        *,
        study_uid: str = "",
        detail: str = "",
        code: int | None = None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO events(at, run_id, study_uid, kind, code, detail) VALUES(?,?,?,?,?,?)",
            (now(), run_id, study_uid, kind, code, detail),
        )

    def events(self, run_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, at, run_id, study_uid, sop_uid, kind, code, detail FROM events"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id=?"
            params = (run_id,)
        keys = ("id", "at", "run_id", "study_uid", "sop_uid", "kind", "code", "detail")
        return [
            dict(zip(keys, r, strict=True))
            for r in self._conn.execute(sql + " ORDER BY id", params)
        ]

    def sent_timeline(self) -> list[tuple[str, int]]:
        """(timestamp, run_id) of every instance stored, in order: for throughput charts."""
        rows = self._conn.execute(
            "SELECT at, run_id FROM events WHERE sop_uid<>'' AND kind='sent' ORDER BY id"
        )
        return [(r[0], int(r[1] or 0)) for r in rows]

    # -- verifications ------------------------------------------------------------------
    def record_verification(
        self,
        run_id: int,
        study_uid: str,
        status: str,
        expected: int,
        found: int,
        detail: dict[str, Any],
    ) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT OR REPLACE INTO verifications(run_id, study_uid, status, expected_instances, "
                "found_instances, detail, at) VALUES(?,?,?,?,?,?,?)",
                (
                    run_id,
                    study_uid,
                    status,
                    expected,
                    found,
                    json.dumps(detail, sort_keys=True),
                    now(),
                ),
            )

    def latest_verification(self) -> tuple[RunRow, dict[str, dict[str, Any]]] | None:
        """The run of the newest verification, and the newest verification of every study.

        Studies are verified by `verify` runs and, as they complete, during `apply` runs
        (live verification): a study's newest result stands whichever run recorded it.
        """
        by_study = self.verification_by_study()
        if not by_study:
            return None
        newest = max(by_study.values(), key=lambda v: (v["at"], v["run_id"]))
        runs = {r.run_id: r for r in self.runs()}
        return runs[newest["run_id"]], by_study

    def verification_by_study(self) -> dict[str, dict[str, Any]]:
        """study_uid -> its newest verification: status, expected, found, detail, at, run_id."""
        rows = self._conn.execute(
            "SELECT study_uid, status, expected_instances, found_instances, detail, at, run_id "
            "FROM verifications WHERE rowid IN "
            "(SELECT MAX(rowid) FROM verifications GROUP BY study_uid)"
        )
        return {
            r[0]: {
                "status": r[1],
                "expected": r[2],
                "found": r[3],
                "detail": json.loads(r[4]),
                "at": r[5],
                "run_id": r[6],
            }
            for r in rows
        }

    def needs_resend(self, study_uid: str) -> set[str]:
        """Instances of a study that apply must send again although the destination lists
        them: verify found them not committed, or different from the source's copy."""
        marks = ",".join("?" * len(RESEND_REASONS))
        sql = f"SELECT sop_uid FROM instances WHERE study_uid=? AND state=? AND reason IN ({marks})"  # noqa: S608  # nosec B608
        rows = self._conn.execute(sql, (study_uid, MISSING, *RESEND_REASONS))
        return {r[0] for r in rows}

    # -- helpers ------------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection, nested: bool) -> None:
            self._conn = conn
            self._nested = nested

        def __enter__(self) -> None:
            self._conn.execute("SAVEPOINT tx" if self._nested else "BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, *rest: object) -> None:
            if not self._nested:
                self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            elif exc_type:
                self._conn.execute("ROLLBACK TO tx")
                self._conn.execute("RELEASE tx")
            else:
                self._conn.execute("RELEASE tx")

    def _tx(self) -> Journal._Tx:
        return Journal._Tx(self._conn, self._batched)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One commit for the changes made inside: outcomes that arrived together are
        journalled together, not one disk transaction each. Each change stays whole (a
        savepoint); what was done before an exception is committed, not lost."""
        if self._batched:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._batched = True
        try:
            yield
        finally:
            self._batched = False
            self._conn.execute("COMMIT")

    def iter_rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self._conn.execute(sql, params)
