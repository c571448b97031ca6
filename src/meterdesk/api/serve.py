"""Running the API with uvicorn (``meterdesk serve``).

Defaults to 127.0.0.1:8000, one process: the embedded SQLite setup (see ARCHITECTURE.md,
"Processes"). Request handlers are synchronous and run in uvicorn's thread pool; the database
handles concurrency (WAL on SQLite, row locks on PostgreSQL). Behind a reverse proxy on the same
machine, X-Forwarded-For from 127.0.0.1 is trusted, so the audit log records the real client
address; set ``forwarded_allow_ips`` for a proxy elsewhere.
"""

from __future__ import annotations

import uvicorn

from meterdesk.api.app import create_app
from meterdesk.api.context import ApiConfig
from meterdesk.bootstrap import App
from meterdesk.shared.runtime import tune_for_long_running

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def server(
    app: App,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    config: ApiConfig | None = None,
    forwarded_allow_ips: str = "127.0.0.1",
    log_level: str = "info",
) -> uvicorn.Server:
    """A uvicorn server for the API over ``app`` (not started)."""
    settings = uvicorn.Config(
        create_app(app, config=config),
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=log_level,
        server_header=False,
    )
    return uvicorn.Server(settings)


def serve(app: App, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the API and console until interrupted (Ctrl-C)."""
    tune_for_long_running()  # keeps full GC passes off the 10,000-room grid (P5)
    server(app, host=host, port=port).run()
