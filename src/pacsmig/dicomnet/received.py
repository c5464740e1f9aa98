"""What a retrieval hands to pacsmig: one instance, still encoded as the peer sent it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def store_to_sink(event: Any, sink: InstanceSink | None) -> int:
    """An EVT_C_STORE handler body: hand the encoded dataset to sink, answer a status."""
    if sink is None:
        return 0xA700  # nobody is collecting: refuse rather than pretend to store
    try:
        item = ReceivedInstance(
            sop_uid=str(event.request.AffectedSOPInstanceUID),
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            transfer_syntax=str(event.context.transfer_syntax),
            data=event.encoded_dataset(include_meta=True),
        )
        return 0x0000 if sink(item) else 0xA700
    except Exception as exc:  # the peer must get a status, never a dropped association
        log.error("storing a received instance failed: %s", type(exc).__name__)
        return 0xC211
