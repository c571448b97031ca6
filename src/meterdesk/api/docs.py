"""Browsable API docs at ``/api/docs`` with Swagger UI served by meterdesk itself (no CDN: the
machines have no internet). The files in ``static/swagger-ui`` are swagger-ui-dist 5.35.0 from
npm (Apache-2.0, see its LICENSE and NOTICE there)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
ASSETS = "/api/static"
SWAGGER_UI_VERSION = "5.35.0"


def install(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="api-static")

    @app.get("/api/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="meterdesk API",
            swagger_js_url=f"{ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/swagger-ui/favicon-32x32.png",
            # validatorUrl None: Swagger UI would otherwise fetch a badge from an online validator.
            swagger_ui_parameters={"validatorUrl": None, "withCredentials": True},
        )
