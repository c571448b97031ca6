"""Reading values out of the simulator's TOML tables, with errors that say where (shared by
:mod:`.config` and the per-kind parsers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterdesk.shared.errors import ValidationError

Table = Mapping[str, Any]


def check_keys(table: Table, allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ValidationError(
            f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})"
        )


def typed(table: Table, key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is not None and (
        isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind)
    ):
        raise ValidationError(f"{where}: {key} = {value!r} has the wrong type")
    return value


def endpoint(text: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(f"{where}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)
