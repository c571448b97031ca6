"""The MQTT broker the integration tests use (Mosquitto on 127.0.0.1:1883), checked once per run
so the end of the run can say whether the broker tests ran (import as
``from support.broker import …``)."""

from __future__ import annotations

import socket

BROKER = ("127.0.0.1", 1883)
_broker_state: dict[str, str | None] = {}


def broker_unavailable() -> str | None:
    """None when the broker answers, else why not (checked once per run)."""
    if "reason" not in _broker_state:
        try:
            with socket.create_connection(BROKER, timeout=2):
                _broker_state["reason"] = None
        except OSError as error:
            _broker_state["reason"] = (
                f"Mosquitto does not answer on {BROKER[0]}:{BROKER[1]} ({error})"
            )
    return _broker_state["reason"]
