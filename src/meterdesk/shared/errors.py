"""The one root of every error meterdesk raises on purpose.

Each class says what went wrong in words an operator understands; the CLI and the API map the
classes to exit codes and HTTP statuses in one table each. Raising one of these means nothing was
changed: use cases validate before they write, and the unit of work rolls back on any error.
"""

from __future__ import annotations


class MeterdeskError(Exception):
    """Root of all deliberate errors."""


class ValidationError(MeterdeskError):
    """Input that cannot be accepted as given (a field, a file row, a frame)."""


class NotFoundError(MeterdeskError):
    """A referenced object does not exist in the caller's organisation."""


class ConflictError(MeterdeskError):
    """The request contradicts the current state (duplicate name, closed account, ...)."""


class IdempotencyConflictError(ConflictError):
    """The idempotency key was already used for a different request."""


class InsufficientFundsError(ConflictError):
    """A debit would take a wallet below its allowed floor."""
