"""Legal-hold reason codes: the one fixed list (privacy statement §6.2), shared by the CLI, the
rights service, the ledger and the audit log.

Free text never enters the permanent log: a hold carries one of these codes, and any words an
operator wants to keep go in an optional note sealed under the data subject's key, so erasing
the subject shreds the note with everything else.
"""

from __future__ import annotations

from enum import StrEnum


class HoldReason(StrEnum):
    """Why data is held past its retention period (statement §6.2)."""

    LITIGATION = "litigation"
    COURT_ORDER = "court_order"
    REGULATOR_REQUEST = "regulator_request"
    LAW_ENFORCEMENT = "law_enforcement"
    CONTRACT_DISPUTE = "contract_dispute"
    SECURITY_INCIDENT = "security_incident"


HOLD_REASONS: tuple[str, ...] = tuple(r.value for r in HoldReason)

#: The longest hold note accepted (characters).
MAX_NOTE_CHARS = 2000


class UnknownHoldReason(ValueError):
    """A reason that is not one of the codes (the value is never echoed: it may be free text)."""

    code = "unknown_hold_reason"

    def __init__(self) -> None:
        super().__init__(f"unknown hold reason; use one of: {', '.join(HOLD_REASONS)}")


class HoldNoteTooLong(ValueError):
    """A hold note longer than :data:`MAX_NOTE_CHARS`."""

    code = "hold_note_too_long"

    def __init__(self) -> None:
        super().__init__(f"a hold note is at most {MAX_NOTE_CHARS} characters")


def parse_reason(value: str | HoldReason) -> HoldReason:
    """The code named by ``value`` (exact, lower-case); :class:`UnknownHoldReason` otherwise."""
    if isinstance(value, HoldReason):
        return value
    try:
        return HoldReason(value.strip())
    except ValueError:
        raise UnknownHoldReason() from None


def note_context(entity_id: str) -> dict[str, str]:
    """The encryption context of a hold note: bound to its subject or job row."""
    return {"purpose": "hold-note", "entity": entity_id}
