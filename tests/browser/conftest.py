"""A real server with small models, and Debian's Chromium driven by Playwright, kept off the
network: only the server's origin is reachable, and console or page errors fail the test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.settings import REPO_ROOT
from tests.e2e.server import Server
from tests.tiny_models import make_tiny_gpt, small_pretrained

SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Flags that keep the browser from phoning home; every host but loopback fails to resolve.
CHROMIUM_ARGS = [
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("GENSERVE_CHROMIUM", ""), *CHROMIUM_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("browser")
    # Beside the defaults: models whose names sort before them (the pickers must still start
    # on the default), an unconditional GAN and a diffusion model (other image controls), and
    # the default VAE (the VAE panel's).
    pretrained = small_pretrained(
        tmp / "pretrained", ("sentiment", "digits", "mnist-gan", "mnist-diffusion", "mnist-vae")
    )
    make_tiny_gpt(pretrained, "half-trained-gpt")
    srv = Server(
        tmp,
        GENSERVE_PRETRAINED_DIR=str(pretrained),
        GENSERVE_DEFAULT_TEXT_MODEL="tiny-gpt",
        GENSERVE_DEFAULT_IMAGE_MODEL="tiny-cvae",
        GENSERVE_JOB_HEARTBEAT_S="0.2",
        GENSERVE_REGISTRY_POLL_S="0.2",
        GENSERVE_RUNNER_DEVICE="cpu",
        GENSERVE_RUNNER_THREADS="1",
        GENSERVE_THREADS_PER_WORKER="1",
    ).ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium at /usr/bin/chromium (.ci/run installs Debian's `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """What the page reported: console errors, uncaught exceptions, blocked requests."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # substrings a test expects to see

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


def open_page(browser: Any, server: Server, console: Console, **context: Any) -> Any:
    """The playground in a fresh context whose only reachable origin is the server."""
    page = offline_page(browser, server, console, **context)
    page.goto(server.url + "/")
    page.wait_for_selector("#text-model option", state="attached")  # /models rendered
    return page


def offline_page(browser: Any, server: Server, console: Console, **context: Any) -> Any:
    """A blank page in a fresh context (own sessionStorage) whose only reachable origin is the
    server: other requests are blocked and recorded, console errors collected."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.set_default_timeout(20_000)

    def route(request: Any) -> None:
        if request.request.url.startswith(server.url + "/"):
            request.continue_()
        else:
            console.blocked.append(request.request.url)
            request.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
    page.on("pageerror", lambda exc: console.errors.append(f"page error: {exc}"))
    return page


@pytest.fixture
def page(browser: Any, server: Server, console: Console) -> Iterator[Any]:
    page = open_page(browser, server, console, viewport={"width": 1280, "height": 900})
    yield page
    page.context.close()
    assert not console.unexpected(), console.errors
    assert not console.blocked, f"requests outside the server: {console.blocked}"


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """Saves a screenshot under var/screenshots (kept out of git) and prints its path."""

    def take(target: Any, name: str, **options: Any) -> Path:  # a page or a locator
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        target.screenshot(path=str(path), **options)
        print(f"screenshot: {path}")
        return path

    return take
