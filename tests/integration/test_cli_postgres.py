"""The ``meterdesk`` command on PostgreSQL (METERDESK_DATABASE_URL, a fresh schema brought up by
``meterdesk migrate``): what only PostgreSQL refuses is still a clear error and exit code 2."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_cli import FLAT_TARIFF, forget_cli_app, run

from support.database import PG_URL, postgres_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL not answering: {reason}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METERDESK_DATABASE_URL", f"{PG_URL}?options=-csearch_path%3D{schema}")
    for name in ("METERDESK_ORG", "METERDESK_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    forget_cli_app()
    try:
        run("migrate")
        yield
    finally:
        forget_cli_app()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_value_too_long_for_its_column_is_exit_2_not_a_traceback(
    pg_cli: None, tmp_path: Path
) -> None:
    run("org", "create", "Acme")
    tariff = tmp_path / "flat.json"
    tariff.write_text(json.dumps(FLAT_TARIFF))

    refused = run("tariff", "create", "T" * 201, "--org", "Acme", "--file", str(tariff), code=2)

    assert "the database refused a value: value too long" in refused.output
    run("tariff", "show", "T" * 201, "--org", "Acme", code=3)  # nothing stored
