"""``create_app``: the FastAPI application over a built :class:`meterdesk.bootstrap.App`.

The API lives under ``/api/v1``; the OpenAPI document at ``/openapi.json``; Swagger UI at
``/api/docs`` from local files. The console (issue 5, later) mounts its pages at ``/``.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from meterdesk import __version__
from meterdesk.api import docs, errors
from meterdesk.api.context import ApiConfig, ApiContext
from meterdesk.api.routers import (
    accounts,
    audit,
    commands,
    control,
    devices,
    meters,
    money,
    notices,
    notifications,
    places,
    presets,
    readings,
    session,
    summaries,
    tariffs,
    users,
)
from meterdesk.api.text_guard import refuse_control_characters
from meterdesk.bootstrap import App
from meterdesk.web import mount as mount_console

PREFIX = "/api/v1"
ROUTERS = (
    session.router,
    users.router,
    places.router,
    meters.router,
    readings.router,
    tariffs.router,
    accounts.router,
    presets.router,
    money.router,
    audit.router,
    devices.router,
    commands.router,
    control.router,
    notifications.router,
    notices.router,
    summaries.router,
)
DESCRIPTION = """Prepaid water & electricity: places, meters, tariffs, accounts, money, devices,
commands, supply control and notifications.

* **Auth**: `Authorization: Bearer mdk_…` (API token), or the console session cookie from
  `POST /api/v1/session` plus `X-CSRF-Token` on every change.
* **Money** is a decimal string (`"100.00"`), never a JSON number.
* **Idempotency-Key** is required on every call that moves money or supply; a repeat answers
  the first result with `Idempotent-Replay: true`.
* **Errors**: `{"error": {"code": "...", "message": "..."}}`.
* Every id belongs to your organisation; another organisation's ids answer 404.
"""


def create_app(app: App, *, config: ApiConfig | None = None) -> FastAPI:
    api = FastAPI(
        title="meterdesk API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_control_characters)],
    )
    api.state.meterdesk = ApiContext(app=app, config=config or ApiConfig())
    errors.install(api)
    for router in ROUTERS:
        api.include_router(router, prefix=PREFIX)
    docs.install(api)
    mount_console(api)  # the operator console at / (issue 5)
    return api
