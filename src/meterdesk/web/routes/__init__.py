"""The console's pages and fragments (``ROUTERS``, hidden from the OpenAPI document) and the
room-grid API route (``grid_api.router``, under ``/api/v1``)."""

from __future__ import annotations

from meterdesk.web.routes import (
    actions,
    alarm_settings,
    auth,
    customers,
    devices,
    monitor,
    notices,
    notifications,
    policy,
    presets,
    room,
    statement,
    summaries,
    tariffs,
    wizard,
)

ROUTERS = (
    auth.router,
    monitor.router,
    room.router,
    customers.router,
    statement.router,
    actions.router,
    policy.router,
    alarm_settings.router,
    wizard.router,
    presets.router,
    tariffs.router,
    devices.router,
    notifications.router,
    notices.router,
    summaries.router,
)
