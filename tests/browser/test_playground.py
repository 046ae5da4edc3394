"""The playground in a real browser: streamed text, images, classification of text and of a
drawn digit, a training job whose loss curve grows, activation, phone width, the keyboard,
and the API key dialog. Screenshots go to var/screenshots/."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from app.main import create_app
from app.routers.ui import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.browser.conftest import Console, open_page
from tests.conftest import make_settings
from tests.e2e.server import Server
from tests.tiny_models import TINY_GPT_PARAMS

pytestmark = pytest.mark.e2e
TINY_GPT = {
    "max_steps": 600,  # about 7 s on one CPU thread: the page polls every second
    "eval_every": 30,
    **TINY_GPT_PARAMS,
}


def test_page_and_assets_are_served_by_genserve(server: Server) -> None:
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, no external font
    assert '<script type="module" src="/static/js/main.js"></script>' in page.text
    # Browsers refuse a module script served with a non-JavaScript type (text/javascript from
    # /etc/mime.types, application/javascript from Python's own table: either will do).
    modules = sorted(path.name for path in (STATIC_DIR / "js").glob("*.js"))
    assert "main.js" in modules
    for name in modules:
        module = server.client.get(f"/static/js/{name}")
        assert module.status_code == 200, name
        assert "javascript" in module.headers["content-type"], name
        assert module.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, name
    asset = server.client.get("/static/js/main.js")
    assert asset.headers["cache-control"] == "no-cache" and asset.headers["etag"]
    etag = {"If-None-Match": asset.headers["etag"]}
    assert server.client.get("/static/js/main.js", headers=etag).status_code == 304
    assert server.client.get("/ui").status_code == 200
    assert server.client.get("/static/missing.js").status_code == 404
    assert server.client.get("/static/%2e%2e/routers/ui.py").status_code == 404


def test_page_needs_no_key_when_the_api_does(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, api_keys="sesame-open:admin"))
    client = TestClient(app)  # no lifespan: the page needs neither models nor a database
    assert client.get("/").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/models").status_code == 401


def test_streamed_text_appears_token_by_token(page: Any, screenshot: Any) -> None:
    page.evaluate(
        """() => {
        window.tokenUpdates = 0;
        new MutationObserver((records) => { window.tokenUpdates += records.length; })
          .observe(document.querySelector('#text-output'),
                   {subtree: true, childList: true, characterData: true});  // a span a token
        }"""
    )
    page.select_option("#text-model", "tiny-gpt")
    page.fill("#text-prompt", "ROMEO:")
    page.fill("input[name=max_new_tokens]", "120")
    page.fill("input[name=seed]", "1")
    page.click("#text-go")
    page.wait_for_selector("#text-output[data-state=done]")
    stats = page.inner_text("#text-stats")
    assert "120 tokens" in stats and "finished: length" in stats, stats
    output = page.inner_text("#text-output")
    assert output.startswith("ROMEO:") and len(output) > len("ROMEO:") + 50
    assert page.evaluate("window.tokenUpdates") >= 100  # appended as each token arrived
    screenshot(page.locator("#text"), "text-generation")


def test_image_grid_is_shown(page: Any, screenshot: Any) -> None:
    page.select_option("#image-model", "tiny-cvae")
    page.fill("#image-form input[name=n]", "16")
    page.select_option("#image-label", "3")
    page.click("#image-go")
    image = page.wait_for_selector("#image-output:not([hidden])")
    page.wait_for_function("() => document.querySelector('#image-output').naturalWidth > 0")
    assert image.evaluate("img => img.naturalWidth") >= 4 * 28  # a 4x4 grid of 28x28 digits
    assert "16 images" in image.get_attribute("alt")
    screenshot(page.locator("#image"), "image-generation")


def test_sentence_is_classified(page: Any, server: Server, screenshot: Any) -> None:
    labels = server.client.get("/models/sentiment").json()["labels"]
    page.fill("#classify-text-input", "I love this phone, it is wonderful.\nWorst purchase ever.")
    page.click("#classify-text-form button[type=submit]")
    shown = page.locator("#classify-text-result .result-label")
    shown.first.wait_for()
    assert shown.count() == 2 and all(label in labels for label in shown.all_inner_texts())
    screenshot(page.locator("#classify"), "classify-text")


def test_drawn_digit_is_classified(page: Any, screenshot: Any) -> None:
    page.locator("#digit-canvas").scroll_into_view_if_needed()
    box = page.locator("#digit-canvas").bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + 25, box["y"] + box["height"] - 25
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 11):  # a vertical stroke: a "1"
        page.mouse.move(x, top + (bottom - top) * i / 10)
    page.mouse.up()
    page.click("#classify-image-form button[type=submit]")
    shown = page.locator("#classify-image-result .result-label")
    shown.wait_for()
    assert shown.inner_text() == "1"
    screenshot(page.locator("#classify"), "classify-digit")


def test_uploaded_photo_of_a_digit_is_classified(page: Any) -> None:
    """Dark ink on white paper, 32x32: the page inverts, crops and downscales it."""
    digits = load_digits()
    index = int(np.flatnonzero(digits.target == 3)[0])
    ink = np.kron(digits.images[index] * 255 / 16, np.ones((4, 4)))  # 8x8 -> 32x32
    buffer = io.BytesIO()
    Image.fromarray((255 - ink).astype("uint8")).save(buffer, format="PNG")
    file = {"name": "three.png", "mimeType": "image/png", "buffer": buffer.getvalue()}
    page.set_input_files("#digit-file", files=[file])
    page.click("#classify-image-form button[type=submit]")
    shown = page.locator("#classify-image-result .result-label")
    shown.wait_for()
    assert shown.inner_text() == "3"


def test_training_job_curve_grows_then_version_is_activated(
    page: Any, server: Server, screenshot: Any
) -> None:
    page.select_option("#train-kind", "text-gpt")
    page.select_option("#train-dataset", label="tinyshakespeare (text)")
    page.fill("#train-name", "ui-gpt")
    page.click("#train summary")
    for name, value in TINY_GPT.items():
        page.fill(f"#param-{name}", str(value))
    page.click("#train-go")
    page.wait_for_selector("#loss-canvas[data-points]")

    points = TINY_GPT["max_steps"] // TINY_GPT["eval_every"]
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not seen or seen[-1] < points):
        seen.append(int(page.get_attribute("#loss-canvas", "data-points") or 0))
        time.sleep(0.1)
    assert seen[-1] == points, seen
    growth = sorted({n for n in seen if n})
    assert len(growth) >= 2, growth  # drawn while the job ran, not only once it ended
    page.wait_for_selector("#jobs-body tr.selected .st-succeeded")
    assert "train_loss" in page.inner_text("#loss-legend")
    screenshot(page.locator("#train"), "training")

    # The job registered ui-gpt v1 without serving it: activate it from the Models panel.
    page.click("#models-refresh")
    page.click("button[aria-label='Activate ui-gpt v1']")
    page.wait_for_selector("article[aria-label=ui-gpt] .badge")
    page.wait_for_selector("#text-model option[value=ui-gpt]", state="attached")
    screenshot(page.locator("#models"), "models")
    job = server.client.get("/train", params={"name": "ui-gpt"}).json()["data"][0]
    assert job["status"] == "succeeded"


def test_phone_width_has_no_horizontal_overflow(
    browser: Any, server: Server, console: Console, screenshot: Any
) -> None:
    page = open_page(browser, server, console, viewport={"width": 375, "height": 812})
    page.wait_for_selector("#train-kind option", state="attached")
    overflow = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1
                       && !el.parentElement.closest('.table-wrap'))  // those scroll
          .map((el) => el.id || el.className || el.tagName)"""
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, overflow
    assert not overflow
    screenshot(page, "phone", full_page=True)
    page.context.close()
    assert not console.unexpected(), console.errors


def test_keyboard_reaches_the_main_controls(page: Any, screenshot: Any) -> None:
    wanted = {
        "key-input",
        "text-model",
        "text-prompt",
        "text-go",
        "image-go",
        "classify-text-input",
        "digit-file",
        "train-kind",
        "train-go",
        "models-refresh",
    }
    reached: set[str] = set()
    for _ in range(120):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id"))
        if wanted <= reached:
            break
    assert wanted <= reached, wanted - reached
    # Enter on a focused button works like a click.
    page.focus("#classify-text-form button[type=submit]")
    page.keyboard.press("Enter")
    page.locator("#classify-text-result .result-label").first.wait_for()
    screenshot(page, "playground", full_page=True)


def test_refused_request_asks_for_the_key_and_retries_with_it(
    browser: Any, server: Server, console: Console
) -> None:
    console.allowed.append("401")  # Chromium logs the refused response
    seen: list[str | None] = []

    def refuse_without_key(route: Any) -> None:
        key = route.request.headers.get("authorization")
        seen.append(key)
        if key != "Bearer sesame":
            body = '{"error": {"code": "unauthorized", "message": "missing API key"}}'
            route.fulfill(status=401, content_type="application/json", body=body)
        else:
            route.continue_()

    ctx = browser.new_context()
    ctx.route(f"{server.url}/models", refuse_without_key)
    page = ctx.new_page()
    page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
    page.on("pageerror", lambda exc: console.errors.append(f"page error: {exc}"))
    page.goto(server.url + "/")
    dialog = page.wait_for_selector("#key-dialog[open]")
    assert "missing API key" in dialog.inner_text()
    page.fill("#key-dialog-input", "sesame")
    page.click("#key-dialog button[value=ok]")
    page.wait_for_selector("#text-model option", state="attached")
    assert seen[-1] == "Bearer sesame"
    assert page.evaluate("sessionStorage.getItem('genserve.apiKey')") == "sesame"
    assert page.input_value("#key-input") == "sesame"
    ctx.close()
    assert not console.unexpected(), console.errors
