"""The API reference pages, /docs (Swagger UI) and /redoc, with every script, style sheet and icon
served by the app itself.

FastAPI's defaults load them from a public CDN: blank on a clinic network without internet, and
code from a third party running next to a bearer token. The files come from the
``fastapi-offline`` package (Swagger UI and ReDoc builds, MIT / Apache-2.0), which pins them per
release, so upgrading them is a dependency bump.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from clinicsync.deps import PUBLIC

ASSETS = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/static/apidocs"  # an open path (tenancy/permissions.py OPEN_PATHS)
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def install_api_docs(app: FastAPI) -> None:
    """Adds /docs, /redoc and their assets; the app is created with ``docs_url=None, redoc_url=None``."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="apidocs")
    title = f"{app.title} API reference"

    @app.get("/docs", include_in_schema=False, dependencies=[PUBLIC])
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT,
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False, dependencies=[PUBLIC])
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False, dependencies=[PUBLIC])
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=title,
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )
