"""The VAE panel in a real browser: a drawn and an uploaded digit interpolated (one PNG strip)
and reconstructed with their anomaly scores, a noise picture scoring far above a digit, and
the label field of a class-conditional VAE. Screenshots go to var/screenshots/."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.data.idx import load_mnist
from tests.browser.test_playground_controls import options
from tests.conftest import DATA_DIR

pytestmark = pytest.mark.e2e


def png_file(pixels: np.ndarray, name: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buffer, format="PNG")
    return {"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()}


def draw_one(page: Any, canvas: str) -> None:
    page.locator(canvas).scroll_into_view_if_needed()
    box = page.locator(canvas).bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + 25, box["y"] + box["height"] - 25
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 11):  # a vertical stroke: a "1"
        page.mouse.move(x, top + (bottom - top) * i / 10)
    page.mouse.up()


def test_two_digits_are_interpolated_and_reconstructed_with_scores(
    page: Any, screenshot: Any
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    page.on(
        "request",
        lambda r: (
            "/images/" in r.url and sent.append((r.url.split("/images/")[1], r.post_data_json))
        ),
    )
    # only VAEs are offered, starting on the server's default VAE (not its default image
    # model, tiny-cvae, a VAE too)
    assert options(page, "#vae-model") == ["mnist-vae", "tiny-cvae"]
    assert page.input_value("#vae-model") == "mnist-vae"
    assert not page.locator("#vae-label").is_visible()

    _, _, images, labels = load_mnist(DATA_DIR)
    zero = images[int(np.flatnonzero(labels == 0)[0])] * 255  # held out: never trained on
    draw_one(page, "#vae-canvas-a")
    page.set_input_files("#vae-file-b", files=[png_file(np.kron(zero, np.ones((3, 3))), "0.png")])
    page.fill("#vae-form input[name=steps]", "6")
    page.click("#vae-go")
    strip = page.wait_for_selector("#vae-strip:not([hidden])")
    page.wait_for_function("() => document.querySelector('#vae-strip').naturalWidth > 0")
    assert strip.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [6 * 30 + 2, 32]
    assert "6 images" in (strip.get_attribute("alt") or "")
    endpoint, body = sent[-1]
    assert endpoint == "interpolate" and body["steps"] == 6 and len(body["images"]) == 2
    assert body["model"] == "mnist-vae"

    page.click("#vae-reconstruct")
    page.wait_for_selector("#vae-result figure.reconstruction >> nth=1")
    digit_scores = [
        float(s)
        for s in page.eval_on_selector_all(
            "#vae-result figure", "fs => fs.map((f) => f.dataset.score)"
        )
    ]
    assert "negative ELBO" in page.inner_text("#vae-result")
    screenshot(page.locator("#vae"), "vae-interpolate-reconstruct")

    # a picture of noise is unlike any digit: it scores far higher than the drawn one
    noise = np.random.default_rng(0).integers(0, 256, (28, 28))
    page.set_input_files("#vae-file-b", files=[png_file(noise, "noise.png")])
    page.click("#vae-reconstruct")
    page.wait_for_function(
        "(old) => { const f = document.querySelectorAll('#vae-result figure');"
        " return f.length === 2 && Number(f[1].dataset.score) !== old; }",
        arg=digit_scores[1],
    )
    scores = [
        float(s)
        for s in page.eval_on_selector_all(
            "#vae-result figure", "fs => fs.map((f) => f.dataset.score)"
        )
    ]
    assert scores[1] > 3 * max(digit_scores) and scores[0] == pytest.approx(digit_scores[0])

    # a class-conditional VAE decodes the label picked
    page.select_option("#vae-model", "tiny-cvae")
    assert page.locator("#vae-label").is_visible()
    assert page.locator("#vae-result figure").count() == 0  # the other model's results went
    page.select_option("#vae-label", "3")
    page.click("#vae-go")
    page.wait_for_selector("#vae-strip:not([hidden])")
    assert sent[-1][1]["label"] == 3 and sent[-1][1]["model"] == "tiny-cvae"
    assert "label 3" in (page.get_attribute("#vae-strip", "alt") or "")
