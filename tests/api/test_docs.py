"""/docs and /redoc are served from genserve itself (deployments may have no internet), under a
Content-Security-Policy whose scripts come only from the server or match a listed hash."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings

ATTRIBUTE_URL = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']""")
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """No lifespan: the pages need neither models nor a database, and no key."""
    settings = make_settings(tmp_path_factory.mktemp("docs"), api_keys="docs-key-1:admin")
    yield TestClient(create_app(settings))


def csp(header: str) -> dict[str, list[str]]:
    directives = (d.split() for d in header.split(";") if d.strip())
    return {name: values for name, *values in directives}


@pytest.mark.parametrize(
    ("page", "types"),
    [
        ("/docs", {"javascript", "css", "svg"}),
        ("/redoc", {"javascript", "svg"}),
    ],
)
def test_docs_page_loads_only_its_own_assets(client: TestClient, page: str, types: set) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "http" not in response.text  # no CDN, no Google font, no external favicon
    urls = ATTRIBUTE_URL.findall(response.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    seen = set()
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        seen |= {t for t in ("javascript", "css", "svg", "json") if t in kind}
    assert types <= seen, seen


def test_docs_pages_allow_only_their_own_scripts(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        policy = csp(response.headers["content-security-policy"])
        assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
        assert "'unsafe-inline'" not in policy["script-src"], page
        assert "'unsafe-eval'" not in policy["script-src"], page
        assert all(s == "'self'" or s.startswith("'sha256-") for s in policy["script-src"])
        for script in INLINE_SCRIPT.findall(response.text):  # each inline script is allowed
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy["script-src"], page
        assert response.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_loads_the_schema_under_the_root_path(tmp_path: Path) -> None:
    """Behind a proxy that strips a prefix, the page asks for the prefixed schema."""
    app = create_app(make_settings(tmp_path))
    client = TestClient(app, root_path="/genserve")
    text = client.get("/docs").text
    assert "'/genserve/openapi.json'" in text and 'src="/genserve/docs/' in text
    assert client.get("/redoc").text.count('"/genserve/') >= 2


def test_asset_paths_stay_inside_the_bundle(client: TestClient) -> None:
    missing = client.get("/docs/missing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/docs/%2e%2e/redoc/redoc.standalone.js").status_code == 404
    assert client.get("/redoc/%2e%2e/%2e%2e/__init__.py").status_code == 404
    assert client.get("/redoc/logo-mini.svg").status_code == 200  # ReDoc asks for it there
    js = client.get("/docs/swagger-ui-bundle.js")
    assert js.headers["etag"] and js.headers["cache-control"] == "no-cache"
    etag = {"If-None-Match": js.headers["etag"]}
    assert client.get("/docs/swagger-ui-bundle.js", headers=etag).status_code == 304


def test_openapi_schema_stays_reachable_without_a_key(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/models").status_code == 401
