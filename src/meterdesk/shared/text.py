"""Text people and files give us: what may be stored as it is.

NUL cannot be stored in PostgreSQL text at all (psycopg refuses it, so a name with one was a 500
there and stored on SQLite); the other control characters have no place in a name, a number or a
memo and can drive a terminal (ESC) that prints them. Tab, newline and carriage return stay
allowed: they are ordinary in multi-line settings.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_FORBIDDEN_IN_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # tab and line breaks too


def control_character(value: str) -> str | None:
    """The first forbidden control character of ``value`` as ``U+0000``, or None."""
    found = _FORBIDDEN.search(value)
    return None if found is None else f"U+{ord(found.group()):04X}"


def control_character_in_one_line(value: str) -> str | None:
    """As :func:`control_character`, for text that is one line (a name, a number, a cell):
    tab, newline and carriage return count too."""
    found = _FORBIDDEN_IN_ONE_LINE.search(value)
    return None if found is None else f"U+{ord(found.group()):04X}"


def first_control_character(value: object, where: str) -> str | None:
    """``where: a control character (U+001B) is not allowed`` for the first string inside
    ``value`` (dict keys and values, lists, nested) holding one, or None."""
    if isinstance(value, str):
        found = control_character(value)
        return None if found is None else f"{where}: a control character ({found}) is not allowed"
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            problem = first_control_character(key, inner) or first_control_character(item, inner)
            if problem:
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = first_control_character(item, f"{where}.{index}" if where else str(index))
            if problem:
                return problem
    return None


def spreadsheet_cell(value: str) -> str:
    """Text a spreadsheet shows as text rather than running as a formula (CSV injection): a
    value starting with ``= + - @``, tab or carriage return gets a leading ``'``."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
