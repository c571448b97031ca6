"""Shared fixtures.

Integration tests run on SQLite always and on PostgreSQL (``METERDESK_TEST_PG_URL``, default
127.0.0.1:5432/test) whenever it answers. When it does not, the run says so plainly at the end.
Each PostgreSQL test gets its own schema, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text

from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.time import FakeClock
from support.broker import _broker_state
from support.database import PG_URL, _pg_state, postgres_unavailable

# Tests never assert timings: Hypothesis's default 200 ms deadline per example would fail a
# correct test on a busy machine, so it is off for every property test.
settings.register_profile("meterdesk", deadline=None)
settings.load_profile("meterdesk")


_STATES = {"postgresql": _pg_state, "broker": _broker_state}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand what this worker learnt about PostgreSQL and the broker to
    the controller, which prints the summary below."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["service_states"] = {name: dict(s) for name, s in _STATES.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: merge the workers' findings; one worker that found a service
    down is enough for the summary to say its tests were skipped."""
    for name, found in getattr(node, "workeroutput", {}).get("service_states", {}).items():
        state = _STATES[name]
        if "reason" in found:
            state["reason"] = state.get("reason") or found["reason"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reason = _pg_state.get("reason")
    if reason:
        terminalreporter.write_line(
            f"SKIPPED the PostgreSQL integration tests: PostgreSQL did not answer ({reason})",
            yellow=True,
        )
    elif "reason" in _pg_state:
        terminalreporter.write_line(
            "PostgreSQL integration tests ran against " + PG_URL.split("@")[-1], green=True
        )
    broker = _broker_state.get("reason")
    if broker:
        terminalreporter.write_line(
            f"SKIPPED the MQTT broker integration tests: {broker}", yellow=True
        )
    elif "reason" in _broker_state:
        terminalreporter.write_line(
            "MQTT broker integration tests ran against Mosquitto at 127.0.0.1:1883", green=True
        )


def _sqlite_engine(tmp_path: object) -> Engine:
    engine = build_engine(f"sqlite:///{tmp_path}/test.sqlite3")
    load_all_tables().create_all(engine)
    return engine


def _postgres_engine() -> tuple[Engine, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    engine = build_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    load_all_tables().create_all(engine)
    return engine, schema


def _drop_schema(schema: str) -> None:
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Engine]:
    if request.param == "sqlite":
        sqlite = _sqlite_engine(tmp_path)
        yield sqlite
        sqlite.dispose()
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL not answering: {reason}")
    pg, schema = _postgres_engine()
    try:
        yield pg
    finally:
        pg.dispose()
        _drop_schema(schema)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def db(engine: Engine, clock: FakeClock) -> Database:
    return Database(engine=engine, clock=clock)
