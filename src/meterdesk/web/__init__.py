"""The operator console (F-MON-*, F-OPEN*, F-TAR-*, F-I18N): server-rendered pages (Jinja2,
autoescaped) made lively with htmx, charts with ECharts, all served by meterdesk itself (no CDN:
the machines have no internet).

Why server-rendered and not a single-page app: every screen is a view of server state that must
be exactly right (money, supply), the API already enforces roles, organisation scoping, CSRF and
idempotency in its dependencies and handlers, and the console reuses them as they are; htmx swaps
fragments for the parts that change (grid filters, dialogs, command status), so the page stays
light on a tablet and there is no second client-side model of the data to keep in step.

:func:`mount` adds the console to the API's FastAPI app: its routes at ``/``, its static files at
``/static``, error pages for console paths (the API's JSON errors stay as they are), and a
``Server-Timing`` header on every response.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/static"


def mount(api: FastAPI) -> None:
    from meterdesk.web import errors
    from meterdesk.web.routes import ROUTERS, grid_api
    from meterdesk.web.timing import ServerTiming

    api.include_router(grid_api.router, prefix="/api/v1")
    for router in ROUTERS:
        api.include_router(router)
    api.mount(STATIC_PATH, StaticFiles(packages=[("meterdesk.web", "static")]), name="static")
    errors.install(api)
    api.add_middleware(ServerTiming)
