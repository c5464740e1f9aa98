"""What a retrieval hands to pacsmig: one instance, still encoded as the peer sent it."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes  # Part 10 bytes: preamble, File Meta, dataset as received


# Returns True when the instance was kept; False makes the SCP answer 0xA700 (out of
# resources) so the peer counts it as failed rather than stored.
InstanceSink = Callable[[ReceivedInstance], bool]


def _element(group_elem: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", *group_elem) + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def part10_header(sop_class_uid: str, sop_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for a received instance.

    Byte for byte what pynetdicom's `Event.encoded_dataset()` writes, built directly: that
    goes through a pydicom FileMetaDataset and cost about 1 ms of the receiving process's
    CPU per instance, measured, while the whole receive path is a few ms.
    """
    body = b"".join(
        (
            struct.pack("<HH", 0x0002, 0x0001) + b"OB\0\0" + struct.pack("<I", 2) + b"\0\1",
            _element((0x0002, 0x0002), b"UI", _uid(sop_class_uid)),
            _element((0x0002, 0x0003), b"UI", _uid(sop_uid)),
            _element((0x0002, 0x0010), b"UI", _uid(transfer_syntax)),
            _element((0x0002, 0x0012), b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
            _element((0x0002, 0x0013), b"SH", _sh(PYNETDICOM_IMPLEMENTATION_VERSION)),
        )
    )
    length = _element((0x0002, 0x0000), b"UL", struct.pack("<I", len(body)))
    return b"\0" * 128 + b"DICM" + length + body


def _sh(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def store_to_sink(event: Any, sink: InstanceSink | None) -> int:
    """An EVT_C_STORE handler body: hand the encoded dataset to sink, answer a status."""
    return store_received(
        sink,
        str(event.request.AffectedSOPClassUID),
        str(event.request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
        event.encoded_dataset(include_meta=False),
    )


def store_received(
    sink: InstanceSink | None, sop_class: str, sop_uid: str, transfer_syntax: str, dataset: bytes
) -> int:
    """Hand one received data set (as encoded on the wire) to sink; the status to answer."""
    if sink is None:
        return 0xA700  # nobody is collecting: refuse rather than pretend to store
    try:
        item = ReceivedInstance(
            sop_uid=sop_uid,
            sop_class_uid=sop_class,
            transfer_syntax=transfer_syntax,
            data=part10_header(sop_class, sop_uid, transfer_syntax) + dataset,
        )
        return 0x0000 if sink(item) else 0xA700
    except Exception as exc:  # the peer must get a status, never a dropped association
        log.error("storing a received instance failed: %s", type(exc).__name__)
        return 0xC211
