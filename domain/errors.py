"""Domain errors. Each carries a stable machine-readable `code` and optional details."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command or value was refused by a domain rule. Maps to a 4xx reply."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidInput(DomainError):
    """A value does not satisfy its schema or a rule about values (422)."""

    code = "invalid_input"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class InvalidProgram(InvalidInput):
    code = "invalid_program"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The command contradicts what is already recorded (409)."""

    code = "conflict"
