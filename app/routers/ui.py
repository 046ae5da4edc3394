"""The browser playground: one page and its assets, all served from `app/static`.

The page holds no data, so it needs no key; every API call it makes sends the key the user
typed. Nothing is fetched from outside the server (deployments may have no internet), and
the Content-Security-Policy says so.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from app.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# No fingerprinted file names: browsers may keep the files but must revalidate (ETag, 304).
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["ui"], include_in_schema=False)
_files = StaticFiles(directory=STATIC_DIR, check_dir=False)


@router.get("/", response_class=FileResponse)
@router.get("/ui", response_class=FileResponse)
def read_playground() -> FileResponse:
    """The single-page playground."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/static/{path:path}")
async def read_asset(path: str, request: Request) -> Response:
    """A file of the playground, with ETag and Last-Modified so revalidation is a 304."""
    return await static_file(_files, path, request)


async def static_file(files: StaticFiles, path: str, request: Request) -> Response:
    """A file from `files` with this page family's headers; a 404 in genserve's shape for a
    missing file or a path that leaves the folder."""
    try:
        response = await files.get_response(path, request.scope)
    except HTTPException:
        raise NotFound(f"no static file {path!r}") from None
    response.headers.update(HEADERS)
    return response
