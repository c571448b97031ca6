"""Schemathesis against ``/openapi.json``, in process: for every operation, generated requests —
valid ones (aimed at Alpha's real ids) and invalid ones — never get a 5xx, and every answer
matches the documented status codes, content types and schemas. Bounded: at most 25 examples
per operation and mode.

Schemathesis's pytest plugin does not work with this pytest, so the test drives its Hypothesis
strategies directly (``APIOperation.as_strategy``), one parametrized test per operation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from apikit import API_CONFIG, World
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine

from meterdesk.api.app import create_app
from meterdesk.billing.ingest import Ingestor
from meterdesk.bootstrap import App
from meterdesk.db.database import Database
from meterdesk.settings import Settings
from meterdesk.shared.time import system_clock

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PERSONAL = {
    ("/api/v1/session", "POST"),
    ("/api/v1/session", "DELETE"),
    ("/api/v1/session/password", "PUT"),
}


def _operations() -> list[tuple[str, str]]:
    """(path, method) of every documented operation; building the document opens no database."""
    db = Database(engine=create_engine("sqlite://"), clock=system_clock)
    app = App(settings=Settings(data_dir=Path("unused")), db=db, ingestor=Ingestor(db))
    with TestClient(create_app(app, config=API_CONFIG)) as client:
        spec = client.get("/openapi.json").json()
    return [(path, method.upper()) for path, item in spec["paths"].items() for method in item]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), _operations())
def test_no_server_errors_and_answers_match_the_schema(
    world: World, path: str, method: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.api)
    operation = schema[path][method]
    ids = world.alpha.ids()
    fixed = {name: ids[name] for name in re.findall(r"{(\w+)}", path)} if mode.is_positive else None
    headers = {} if (path, method) in PERSONAL else world.alpha.auth("admin")

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        # Not schemathesis' 10 s default: on a busy CI machine running the suite in parallel
        # workers one in-process request once took longer. This test checks answers, not speed.
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

    check()
