"""Finding customers by part of their name or phone number, the same in the API and the console.

Phones are stored as E.164 (``+8613800138000``), but people search the way they read a number
aloud ("138 0013 8000", "138-0013-8000"): such a query also matches on its digits alone, so the
separators do not hide the customer; and a whole number typed with its country code
("+86 138 0013 8000") also finds one stored before numbers were normalised ("13800138000",
"138-0013-8000").
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_

from meterdesk.shared.contacts import phone_search_digits, phone_search_national
from meterdesk.sites.tables import customers

SEPARATORS = (" ", "-", "(", ")", ".")


def _anywhere(text: str) -> str:
    """A LIKE pattern that matches ``text`` anywhere, with LIKE's wildcards escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def customer_matches(query: str) -> ColumnElement[bool]:
    """Customers whose name or phone contains ``query`` (or, for a phone-like query, whose phone
    contains its digits, or, for a whole number, its national digits)."""
    pattern = _anywhere(query.strip())
    conditions = [
        customers.c.name.like(pattern, escape="\\"),
        customers.c.phone.like(pattern, escape="\\"),
    ]
    stored_digits = _without_separators(customers.c.phone)
    digits = phone_search_digits(query)
    if digits is not None:
        conditions.append(stored_digits.like(f"%{digits}%"))  # digits need no escaping
    national = phone_search_national(query)
    # "+86 138…" also finds a number stored before numbers were normalised: "138…", "138-…"
    if national is not None and national != digits:
        conditions.append(stored_digits.like(f"%{national}%"))
    return or_(*conditions)


def _without_separators(column: ColumnElement[str]) -> ColumnElement[str]:
    """``column`` without the separators people type in numbers (a number stored before numbers
    were normalised may hold them: ``138-0013-8000``); E.164 holds none. ``replace`` is the
    same function on SQLite and PostgreSQL."""
    for separator in SEPARATORS:
        column = func.replace(column, separator, "")
    return column
