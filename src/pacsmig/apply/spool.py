"""Crash-safe spool of received instances: one Part 10 file per instance, named by hash.

File names never contain DICOM values: a SOP Instance UID such as '../x' cannot escape.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pacsmig.dicomnet.received import ReceivedInstance


def _key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: Path
    size: int


class StudySpool:
    """Collects the instances of one study that are wanted; thread-safe (SCP threads write)."""

    def __init__(
        self,
        root: Path,
        study_uid: str,
        wanted: set[str],
        on_received: Callable[[SpooledInstance], None] | None = None,
    ) -> None:
        self.dir = root / _key(study_uid)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wanted = wanted
        self._wanted = wanted
        # Called once per wanted instance as soon as it is on disk: the send stage starts
        # while the rest of the study is still arriving.
        self._on_received = on_received
        self._lock = threading.Lock()
        self.received: dict[str, SpooledInstance] = {}
        self.unexpected = 0

    def __call__(self, item: ReceivedInstance) -> bool:
        if item.sop_uid not in self._wanted:
            # Not planned (arrived at the source after planning, or already at the
            # destination): accept so the peer does not retry, but do not send it on.
            with self._lock:
                self.unexpected += 1
            return True
        path = self.dir / f"{_key(item.sop_uid)}.dcm"
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as fh:
            fh.write(item.data)
        os.replace(tmp, path)
        spooled = SpooledInstance(
            sop_uid=item.sop_uid,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax=item.transfer_syntax,
            path=path,
            size=len(item.data),
        )
        with self._lock:
            first = item.sop_uid not in self.received
            self.received[item.sop_uid] = spooled
        if first and self._on_received is not None:
            self._on_received(spooled)
        return True

    def replace(self, sop_uid: str, data: bytes) -> None:
        """New bytes for a spooled instance (after processing), written crash-safe."""
        with self._lock:
            item = self.received[sop_uid]
        tmp = item.path.with_suffix(".part")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, item.path)
        with self._lock:
            self.received[sop_uid] = SpooledInstance(
                sop_uid=item.sop_uid,
                sop_class_uid=item.sop_class_uid,
                transfer_syntax=item.transfer_syntax,
                path=item.path,
                size=len(data),
            )

    def discard(self, sop_uid: str) -> None:
        with self._lock:
            item = self.received.get(sop_uid)
        if item is not None:
            item.path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
