"""The playground's rough edges, in a real browser against a real server: model pickers start
on the server's default model, the status line clears on success and stays in view, the image
form offers only what the picked model takes and shows its errors there, the tables reflow at
phone width, and a classifier job shows its accuracy curve."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Console, open_page
from tests.e2e.server import Server
from tests.e2e.test_training import submit

pytestmark = pytest.mark.e2e
SELECTS = {  # select -> (task, input) of the models it offers
    "#text-model": ("text-generation", None),
    "#image-model": ("image-generation", None),
    "#classify-text-model": ("classification", "text"),
    "#classify-image-model": ("classification", "image"),
}


def defaults(server: Server) -> dict[str, str]:
    """The select of each task -> the model the server marks as that task's default."""
    models = server.client.get("/models").json()["data"]
    return {
        select: next(
            m["name"] for m in models if m["default"] and (m["task"], m["input"]) == task_input
        )
        for select, task_input in SELECTS.items()
    }


def options(page: Any, select: str) -> list[str]:
    return page.eval_on_selector_all(f"{select} option", "os => os.map((o) => o.value)")


def shown(value: float) -> str:
    """A number as the page writes it (formatNumber: JavaScript's toPrecision(4))."""
    return str(int(value)) if float(value).is_integer() else f"{value:#.4g}"


def in_view(page: Any, selector: str) -> bool:
    return page.eval_on_selector(
        selector,
        """el => { const r = el.getBoundingClientRect();
                   return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }""",
    )


def test_every_model_picker_starts_on_the_servers_default(page: Any, server: Server) -> None:
    expected = defaults(server)
    assert expected["#text-model"] == "tiny-gpt" and expected["#image-model"] == "tiny-cvae"
    for select, name in expected.items():
        assert page.input_value(select) == name, select
    # Not merely the first by name: these sort before the defaults.
    assert options(page, "#text-model")[0] == "half-trained-gpt"
    assert options(page, "#image-model")[0] == "mnist-diffusion"
    # Chat's first choice leaves the model to the server, and says which one that is.
    assert page.input_value("#chat-model") == ""
    assert page.inner_text("#chat-model option[value='']") == "Server default (tiny-gpt)"
    assert page.inner_text("#chat-model-version").startswith("v1")


def test_image_controls_follow_the_model_and_its_errors_stay_with_it(
    page: Any, console: Console, screenshot: Any
) -> None:
    console.allowed.append("422")  # Chromium logs the refused request
    sent: list[dict[str, Any]] = []
    page.on(
        "request", lambda r: r.url.endswith("/generate/image") and sent.append(r.post_data_json)
    )
    label = page.locator("#image-label")
    truncation = page.locator("#image-form input[name=truncation]")
    steps = page.locator("#image-form input[name=steps]")
    guidance = page.locator("#image-form input[name=guidance]")

    # A class-conditional VAE: a label (one of its classes) and truncation, no diffusion steps.
    page.select_option("#image-model", "tiny-cvae")
    assert label.is_visible() and label.is_enabled() and truncation.is_visible()
    assert options(page, "#image-label") == [""] + [str(i) for i in range(10)]
    assert not steps.is_visible() and not guidance.is_visible()
    page.select_option("#image-label", "7")
    page.fill("#image-form input[name=n]", "4")
    page.click("#image-go")
    page.wait_for_selector("#image-output:not([hidden])")
    assert sent[-1]["label"] == 7 and sent[-1]["truncation"] == 1

    # An unconditional GAN takes no label: the field goes, and the grid of the other model too.
    page.select_option("#image-model", "mnist-gan")
    assert not label.is_visible() and label.is_disabled() and truncation.is_visible()
    page.wait_for_selector("#image-output", state="hidden")
    # A request the server refuses: its error is shown alone, under this model's form.
    page.fill("#image-form input[name=seed]", "99999999999999999999")
    page.click("#image-go")
    error = page.wait_for_selector("#image-caption .error")
    assert "seed" in error.inner_text()
    assert page.locator("#image-output").is_hidden()
    assert "label" not in sent[-1] and sent[-1]["model"] == "mnist-gan"
    assert page.get_attribute("#status", "class") == "status error"
    assert "seed" in page.inner_text("#status") and in_view(page, "#status")
    screenshot(page, "image-error")

    # The next success clears the error, in the form and in the status line.
    page.fill("#image-form input[name=seed]", "3")
    page.click("#image-go")
    page.wait_for_selector("#image-output:not([hidden])")
    assert "mnist-gan" in page.inner_text("#image-caption") and "unconditional" in (
        page.get_attribute("#image-output", "alt") or ""
    )
    assert page.inner_text("#status") == "" and page.locator("#status").is_hidden()
    assert "label" not in sent[-1]

    # A diffusion model: DDIM steps and guidance instead of truncation (its noise is the image).
    page.select_option("#image-model", "mnist-diffusion")
    assert label.is_visible() and steps.is_visible() and guidance.is_visible()
    assert not truncation.is_visible()
    page.fill("#image-form input[name=n]", "2")
    page.fill("#image-form input[name=steps]", "4")
    page.select_option("#image-label", "4")
    page.click("#image-go")
    page.wait_for_selector("#image-output[alt*='generated']")
    assert sent[-1]["steps"] == 4 and sent[-1]["label"] == 4 and "truncation" not in sent[-1]
    # it streams: a preview grid every step here (about ten per request), then the images
    assert sent[-1]["stream"] is True and sent[-1]["preview_every"] == 1
    assert page.get_attribute("#image-output", "data-previews") == "3"
    assert page.evaluate("document.getElementById('image-output').naturalWidth") == 2 * 28
    screenshot(page.locator("#image"), "image-diffusion-controls")


def test_status_line_clears_on_success_and_stays_in_view(page: Any) -> None:
    page.locator("#models").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.fill("#classify-text-input", "   ")  # blank lines only: nothing to classify
    page.evaluate("document.querySelector('#classify-text-form').requestSubmit()")
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status") == "Type a sentence first."
    assert page.evaluate("window.scrollY") > 500 and in_view(page, "#status")
    page.fill("#classify-text-input", "What a lovely day.")
    page.click("#classify-text-form button[type=submit]")
    page.locator("#classify-text-result .result-label").wait_for()
    assert page.inner_text("#status") == "" and page.locator("#status").is_hidden()


def test_tables_reflow_at_phone_width(
    browser: Any, server: Server, console: Console, screenshot: Any
) -> None:
    submit(server, kind="classify-nb", dataset="sentiment", name="phone-nb")
    page = open_page(browser, server, console, viewport={"width": 390, "height": 844})
    page.wait_for_selector("#jobs-body tr[data-job]")
    page.wait_for_selector("#models-list article")
    page.eval_on_selector_all("details", "all => all.forEach((d) => { d.open = true; })")
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('.table-wrap, .table-wrap *')]
          .filter((el) => !el.closest('thead'))  // visually hidden: its cells are not shown
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1
                       || el.scrollWidth > el.clientWidth + 1 && el.matches('.table-wrap'))
          .map((el) => `${el.tagName}.${el.className} ${el.textContent.slice(0, 40)}`)"""
    )
    assert not clipped
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Each cell names its column, since the header row is no longer beside it.
    job_cells = page.locator("#jobs-body tr[data-job]").first.locator("td")
    assert job_cells.nth(2).evaluate("td => getComputedStyle(td, '::before').content") == (
        '"Status"'
    )
    screenshot(page.locator("#train"), "phone-jobs")
    screenshot(page.locator("#models"), "phone-models")
    page.context.close()
    assert not console.unexpected(), console.errors


def test_classifier_job_shows_accuracy_curves(page: Any, server: Server, screenshot: Any) -> None:
    """A CNN on the 8x8 digits: its history holds train_loss and val_accuracy per epoch."""
    page.select_option("#train-kind", "classify-cnn")
    page.select_option("#train-dataset", label="digits (images)")
    page.fill("#train-name", "a-digits-cnn")  # sorts before the default image classifier
    page.check("#train-activate")
    page.click("#train summary")
    for name, value in {"epochs": 3, "hidden": 16, "batch_size": 128}.items():
        page.fill(f"#param-{name}", str(value))
    page.click("#train-go")
    page.wait_for_selector("#jobs-body tr.selected .st-succeeded", timeout=120_000)
    page.wait_for_selector("#accuracy-canvas[data-points='3']")
    job = server.client.get("/train", params={"name": "a-digits-cnn"}).json()["data"][0]
    history = server.client.get(f"/train/{job['id']}").json()["history"]
    accuracy = history[-1]["values"]["val_accuracy"]
    assert page.locator("#accuracy-part").is_visible() and page.locator("#loss-part").is_visible()
    assert f"val_accuracy {shown(accuracy)}" in page.inner_text("#accuracy-legend")
    assert "train_loss" in page.inner_text("#loss-legend")
    assert "val_accuracy" in (page.get_attribute("#accuracy-canvas", "aria-label") or "")
    row = page.locator(f"#jobs-body tr[data-job='{job['id']}'] td[data-label=Accuracy]")
    assert row.inner_text() == shown(job["metrics"]["test_accuracy"])
    screenshot(page.locator("#train"), "classifier-accuracy")
    # The new, active classifier sorts first, but the picker stays on the server's default.
    page.wait_for_selector("#classify-image-model option[value=a-digits-cnn]", state="attached")
    assert options(page, "#classify-image-model")[0] == "a-digits-cnn"
    assert page.input_value("#classify-image-model") == "digits"
    assert defaults(server)["#classify-image-model"] == "digits"
