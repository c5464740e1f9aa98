"""What a retrieval hands to pacsmig: one instance, still encoded as the peer sent it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes  # Part 10 bytes: preamble, File Meta, dataset as received


# Returns True when the instance was kept; False makes the SCP answer 0xA700 (out of
# resources) so the peer counts it as failed rather than stored.
InstanceSink = Callable[[ReceivedInstance], bool]
