"""One small exception tree; the CLI maps each class to one exit code.

Every message is a single line that says what went wrong and where, with no patient data.
"""

from __future__ import annotations


class PacsmigError(Exception):
    """Base of every error pacsmig raises on purpose."""

    exit_code = 1


class SpecError(PacsmigError):
    """The migration spec is malformed or invalid."""

    exit_code = 2


class InputError(PacsmigError):
    """An input file (orders, overrides, plan) cannot be read or is invalid."""

    exit_code = 2


class PlanError(InputError):
    """A plan file is unreadable, of an unknown format, or fails its schema."""


class ApprovalError(PacsmigError):
    """The plan has no sign-off, or was changed after it."""

    exit_code = 3


class StalePlanError(ApprovalError):
    """The plan no longer matches the world it was computed from."""


class PacsError(PacsmigError):
    """A PACS could not be reached, rejected us, or answered out of protocol."""

    exit_code = 4


class AssociationRejected(PacsError):
    """The peer rejected the association (permanent or transient)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NoAcceptedContexts(PacsError):
    """The peer accepted the association but none of the proposed presentation contexts."""


class PeerUnreachable(PacsError):
    """Nothing answered at the peer's address."""
