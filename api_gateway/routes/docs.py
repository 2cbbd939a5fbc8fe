"""Interactive API docs: Swagger UI at /docs, ReDoc at /redoc, from vendored assets (no CDN).

FastAPI's own pages load their assets from a CDN and start them with an inline script; these pages
load everything from /static (api_gateway/static/vendor, versions in each VERSION file) and start
them with a script file, so their CSP allows scripts from this origin only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from core import pages

router = APIRouter(include_in_schema=False)

_PAGES = Path(__file__).resolve().parent.parent / "templates"

SWAGGER_HEADERS = pages.HEADERS
#: ReDoc's own CSP, a little wider than Swagger UI's (which needs nothing beyond 'self'): its
#: styled-components write <style> elements at run time (without 'unsafe-inline' nothing renders),
#: and its search index runs in a Web Worker started from a blob: URL (else a violation and no
#: search). Scripts stay 'self' only, so an injected inline script still runs nowhere.
REDOC_HEADERS = {
    **pages.HEADERS,
    "Content-Security-Policy": pages.CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    + "; worker-src blob:",
}

_SWAGGER = (_PAGES / "swagger.html").read_text()
_REDOC = (_PAGES / "redoc.html").read_text()


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER, headers=SWAGGER_HEADERS)


@router.get("/redoc", response_class=HTMLResponse)
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC, headers=REDOC_HEADERS)
