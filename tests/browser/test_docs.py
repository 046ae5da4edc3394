"""Swagger UI and ReDoc render in a real browser that can reach only the server, under their
Content-Security-Policy: a blocked request, a CSP violation or a page error fails the test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Console, offline_page
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def docs_page(browser: Any, server: Server, console: Console) -> Iterator[Any]:
    """A fresh page whose only reachable origin is the server; nothing loaded yet."""
    page = offline_page(browser, server, console, viewport={"width": 1280, "height": 900})
    yield page
    page.context.close()
    assert not console.unexpected(), console.errors
    assert not console.blocked, f"requests outside the server: {console.blocked}"


def test_swagger_ui_lists_the_operations_offline(
    docs_page: Any, server: Server, screenshot: Any
) -> None:
    docs_page.goto(server.url + "/docs")
    docs_page.wait_for_selector(".opblock-summary-path")
    paths = set(docs_page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/generate/text", "/v1/completions", "/train"} <= {p.strip() for p in paths}, paths
    # "Try it out" calls the API from the page (connect-src 'self').
    operation = docs_page.locator("#operations-health-read_health_healthz_get")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "200"
    screenshot(docs_page, "docs-swagger-ui")


def test_redoc_renders_the_reference_offline(
    docs_page: Any, server: Server, screenshot: Any
) -> None:
    docs_page.goto(server.url + "/redoc")
    docs_page.wait_for_selector("[data-section-id^='tag/openai/operation/']")
    title = docs_page.locator("h1").first.inner_text()
    assert title.startswith("genserve"), title
    operations = docs_page.locator("li[role=menuitem][data-item-id*='/operation/']")
    assert operations.count() >= 10  # the side menu lists every operation
    screenshot(docs_page, "docs-redoc")
