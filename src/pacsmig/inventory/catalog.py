"""The files a plan migrates, by study: written at planning, read by apply and verify.

It lives in the inventory index (SQLite beside the journal), in its own table, so apply needs
neither a re-scan nor the scan cache's internals.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from pacsmig.errors import InputError
from pacsmig.inventory.files import FileInstance

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS plan_catalog (sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, "
    "data TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS plan_catalog_by_study ON plan_catalog(study_uid)",
)


def _connect(index_path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(str(index_path), timeout=30)
        for statement in _SCHEMA:
            con.execute(statement)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"inventory index {index_path} is unusable: {exc}") from None
    return con


def write_catalog(index_path: Path, instances: Mapping[str, Sequence[FileInstance]]) -> None:
    con = _connect(index_path)
    try:
        with con:
            con.execute("DELETE FROM plan_catalog")
            con.executemany(
                "INSERT OR REPLACE INTO plan_catalog(sop_uid, study_uid, data) VALUES(?,?,?)",
                (
                    (f.sop_uid, study_uid, json.dumps(dataclasses.asdict(f), sort_keys=True))
                    for study_uid, files in instances.items()
                    for f in files
                ),
            )
    finally:
        con.close()


def study_instances(index_path: Path, study_uid: str) -> list[FileInstance]:
    if not index_path.exists():
        raise InputError(f"inventory index {index_path} is missing: plan again")
    con = _connect(index_path)
    try:
        rows = con.execute(
            "SELECT data FROM plan_catalog WHERE study_uid=? ORDER BY sop_uid", (study_uid,)
        ).fetchall()
    finally:
        con.close()
    out = []
    for (data,) in rows:
        doc = json.loads(data)
        doc["fixes"] = tuple(doc.get("fixes", ()))
        out.append(FileInstance(**doc))
    return out
