"""The API docs, Swagger UI at /docs and ReDoc at /redoc, served with their scripts and styles
from the `fastapi-standalone-docs` package rather than a CDN: deployments may have no internet.

The pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`). Their
Content-Security-Policy lets scripts come only from this server, plus Swagger UI's one inline
start-up script, allowed by its hash. Styles may be inline: ReDoc writes its styles at run time.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.routers.ui import HEADERS, static_file

ASSETS_DIR = Path(str(files("fastapi_standalone_docs") / "static"))
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(tags=["docs"], include_in_schema=False)
_swagger = StaticFiles(directory=ASSETS_DIR / "swagger", check_dir=False)
_redoc = StaticFiles(directory=ASSETS_DIR / "redoc", check_dir=False)


def content_security_policy(html: str) -> str:
    """Scripts from 'self' and the page's inline scripts by hash; `blob:` workers for ReDoc's
    search index; `data:` images for Swagger UI's icons."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _page(page: HTMLResponse) -> HTMLResponse:
    policy = content_security_policy(bytes(page.body).decode())
    page.headers.update({**HEADERS, "Content-Security-Policy": policy})
    return page


def _root(request: Request) -> str:
    """The prefix a proxy strips (`--root-path`), so the page's URLs work behind it."""
    return request.scope.get("root_path", "").rstrip("/")


def _urls(request: Request, page: str) -> dict[str, str]:
    """What both pages take: the schema's URL and a title; assets are under `root`."""
    return {
        "openapi_url": f"{_root(request)}{request.app.openapi_url}",
        "title": f"{request.app.title} - {page}",
    }


@router.get("/docs", response_class=HTMLResponse)
def read_swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: try every endpoint from the browser."""
    root = _root(request)
    page = get_swagger_ui_html(
        **_urls(request, "Swagger UI"),
        swagger_js_url=f"{root}/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/favicon.svg",
    )
    return _page(page)


@router.get("/redoc", response_class=HTMLResponse)
def read_redoc(request: Request) -> HTMLResponse:
    """ReDoc: the API reference on one page."""
    root = _root(request)
    js, icon = f"{root}/redoc/redoc.standalone.js", f"{root}/static/favicon.svg"
    fonts = False  # Google's fonts are outside the server
    page = get_redoc_html(
        **_urls(request, "ReDoc"), redoc_js_url=js, redoc_favicon_url=icon, with_google_fonts=fonts
    )
    return _page(page)


@router.get("/docs/{path:path}")
async def read_swagger_asset(path: str, request: Request) -> Response:
    """Swagger UI's script and styles."""
    return await static_file(_swagger, path, request)


@router.get("/redoc/{path:path}")
async def read_redoc_asset(path: str, request: Request) -> Response:
    """ReDoc's script, and the logo it asks for beside the page."""
    return await static_file(_redoc, path, request)
