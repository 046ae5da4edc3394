"""The Models panel in a real browser against a real server: each version's lineage, and the
admin's actions (activate, alias, traffic split, delete a version, archive a model), the
destructive ones only after a confirmation, a refusal shown in the status line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Console
from tests.e2e.server import Server
from tests.e2e.test_training import submit, wait_job

pytestmark = pytest.mark.e2e
NAMES = ("lineage-nb", "alias-nb", "traffic-nb", "delete-nb", "archive-nb")


def train_all(server: Server, **body: Any) -> list[dict[str, Any]]:
    """One naive Bayes version (the sentiment sentences: seconds) of each model in NAMES."""
    ids = [
        submit(server, kind="classify-nb", dataset="sentiment", name=name, **body)["id"]
        for name in NAMES
    ]
    jobs = [wait_job(server, job_id) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs), jobs
    return jobs


@pytest.fixture(scope="module")
def trained(server: Server) -> dict[str, list[dict[str, Any]]]:
    """Two versions of each model, v2 served: the jobs that made them, by model name."""
    first, second = train_all(server), train_all(server, activate=True)
    return {name: [a, b] for name, a, b in zip(NAMES, first, second, strict=True)}


@pytest.fixture
def panel(page: Any, trained: dict[str, Any]) -> Iterator[Any]:
    page.click("#models-refresh")
    page.wait_for_selector(f"article[aria-label='{NAMES[-1]}']")
    yield page


def card(page: Any, name: str) -> Any:
    return page.locator(f"article[aria-label='{name}']")


def row(page: Any, name: str, version: int) -> Any:
    return card(page, name).locator(f"tr[data-version='{version}']")


def answer_dialog(page: Any, confirm: bool, expected: str) -> None:
    dialog = page.wait_for_selector("#confirm-dialog[open]")
    assert expected in dialog.inner_text()
    page.click("#confirm-dialog-ok" if confirm else "#confirm-dialog-cancel")
    page.wait_for_selector("#confirm-dialog", state="hidden")


def model(server: Server, name: str) -> dict[str, Any]:
    return server.client.get(f"/models/{name}").json()


def test_versions_show_their_lineage_and_another_is_activated(
    panel: Any, server: Server, trained: dict[str, Any], screenshot: Any
) -> None:
    page, name = panel, "lineage-nb"
    versions = card(page, name).locator("tbody tr")
    assert versions.count() == 2 and versions.first.get_attribute("data-version") == "2"
    for version, job in enumerate(trained[name], start=1):
        lineage = row(page, name, version).locator("td[data-label=Lineage]").inner_text()
        assert "classify-nb" in lineage and "dataset sentiment" in lineage
        assert f"job #{job['id']}" in lineage
        metrics = row(page, name, version).locator("td[data-label=Metrics]").inner_text()
        assert "test_accuracy=" in metrics
    params = model(server, name)["versions"][0]["params"]
    if params:  # the params it was trained with, folded away
        shown = row(page, name, 1).locator("details.params")
        shown.locator("summary").click()
        key = next(iter(params))
        assert f"{key}=" in shown.inner_text()
    assert row(page, name, 2).locator(".badge").inner_text() == "active"
    screenshot(card(page, name), "model-lineage")

    page.click(f"button[aria-label='Activate {name} v1']")
    row(page, name, 1).locator(".badge:text('active')").wait_for()
    assert page.inner_text("#status") == f"{name} v1 is now served."
    assert model(server, name)["active_version"] == 1


def test_alias_is_set_then_removed_after_a_confirmation(panel: Any, server: Server) -> None:
    page, name = panel, "alias-nb"
    card(page, name).locator("summary:text('Manage')").click()
    form = card(page, name).locator("form[aria-label^='Set an alias']")
    form.locator("input[name=alias]").fill("staging")
    form.locator("select[name=version]").select_option("1")
    form.locator("button[type=submit]").click()
    row(page, name, 1).locator(".badge:text('@staging')").wait_for()
    assert model(server, name)["aliases"] == {"staging": 1}
    chip = card(page, name).locator(".chip[data-alias=staging]")
    assert "staging → v1" in chip.inner_text()
    assert page.inner_text("#status") == f"{name}@staging now points at v1."
    # The manage section stays open across the refresh that followed.
    assert card(page, name).locator("details.manage").get_attribute("open") is not None

    remove = f"button[aria-label='Remove alias staging of {name}']"
    page.click(remove)
    answer_dialog(page, confirm=False, expected="Remove the alias staging")
    assert model(server, name)["aliases"] == {"staging": 1}
    page.click(remove)
    answer_dialog(page, confirm=True, expected="Remove the alias staging")
    page.wait_for_selector(f"{remove}", state="detached")
    assert model(server, name)["aliases"] == {}
    assert card(page, name).locator("dd.aliases").inner_text() == "none"


def test_traffic_split_is_set_and_cleared(panel: Any, server: Server, screenshot: Any) -> None:
    page, name = panel, "traffic-nb"
    card(page, name).locator("summary:text('Manage')").click()
    form = card(page, name).locator("form[aria-label^='Traffic split']")
    form.get_by_label("v1 weight").fill("10")
    form.get_by_label("v2 weight").fill("90")
    form.locator("button[type=submit]").click()
    row(page, name, 1).locator(".badge:text('traffic 10')").wait_for()
    assert model(server, name)["traffic"] == {"1": 10, "2": 90}
    assert card(page, name).locator("dd.traffic").inner_text() == "v1: 10 %, v2: 90 %"
    screenshot(card(page, name), "model-traffic")

    page.click(f"button[aria-label='Clear the traffic split of {name}']")
    page.wait_for_selector(f"article[aria-label='{name}'] dd.traffic:text('all to the active')")
    assert model(server, name)["traffic"] is None
    assert page.inner_text("#status") == f"{name} traffic cleared."


def test_deleting_a_version_asks_first_and_shows_a_refusal(
    panel: Any, server: Server, console: Console
) -> None:
    console.allowed.append("409")  # Chromium logs the refused request
    page, name = panel, "delete-nb"
    deletes: list[str] = []
    page.on("request", lambda r: r.method == "DELETE" and deletes.append(r.url))
    put = server.client.put(f"/models/{name}/aliases/keep", json={"version": 1})
    assert put.status_code == 200, put.text
    page.click("#models-refresh")
    row(page, name, 1).locator(".badge:text('@keep')").wait_for()
    delete = f"button[aria-label='Delete {name} v1']"

    page.click(delete)
    answer_dialog(page, confirm=False, expected=f"Delete {name} v1?")
    assert not deletes and len(model(server, name)["versions"]) == 2

    # An aliased version is refused (409): the server's reason is shown, in view.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.click(delete)
    answer_dialog(page, confirm=True, expected=f"Delete {name} v1?")
    page.wait_for_selector("#status.error")
    assert deletes == [f"{server.url}/models/{name}/versions/1"]
    assert len(model(server, name)["versions"]) == 2 and page.inner_text("#status")
    top = page.eval_on_selector("#status", "el => el.getBoundingClientRect().top")
    assert top >= 0 and page.locator("#status").is_visible()

    assert server.client.delete(f"/models/{name}/aliases/keep").status_code == 200
    page.click("#models-refresh")
    row(page, name, 1).locator(".badge:text('@keep')").wait_for(state="detached")
    page.click(delete)
    answer_dialog(page, confirm=True, expected=f"Delete {name} v1?")
    row(page, name, 1).wait_for(state="detached")
    assert page.inner_text("#status") == f"{name} v1 deleted."
    assert [v["version"] for v in model(server, name)["versions"]] == [2]
    # The served version offers no Delete: another one would be activated first.
    assert row(page, name, 2).locator("button:text('Delete')").count() == 0


def test_archiving_a_model_asks_first(panel: Any, server: Server) -> None:
    page, name = panel, "archive-nb"
    card(page, name).locator("summary:text('Manage')").click()
    archive = f"button[aria-label='Archive {name}']"
    page.click(archive)
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")  # the keyboard's way out keeps the model
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert name in [m["name"] for m in server.client.get("/models").json()["data"]]

    page.click(archive)
    answer_dialog(page, confirm=True, expected=f"Archive {name}?")
    card(page, name).wait_for(state="detached")
    assert page.inner_text("#status") == f"{name} archived."
    assert name not in [m["name"] for m in server.client.get("/models").json()["data"]]


def test_a_fine_tuned_version_names_its_parent(page: Any, server: Server) -> None:
    """A small CNN on the 8x8 digits, then a fine-tune from it: v2's lineage names v1."""
    base = {"kind": "classify-cnn", "dataset": "digits", "name": "tuned-cnn"}
    params = {"epochs": 1, "hidden": 16, "batch_size": 256}
    first = wait_job(server, submit(server, **base, params=params)["id"])
    parent = {"model": "tuned-cnn", "version": first["model_version"]["version"]}
    second = wait_job(
        server, submit(server, **base, params={"epochs": 1}, **{"from": parent})["id"]
    )
    assert (first["status"], second["status"]) == ("succeeded", "succeeded"), second["error"]
    page.click("#models-refresh")
    lineage = row(page, "tuned-cnn", 2).locator("td[data-label=Lineage]")
    lineage.wait_for()
    assert f"from tuned-cnn v{parent['version']}" in lineage.inner_text()
    assert f"job #{second['id']}" in lineage.inner_text()
    assert "from" not in row(page, "tuned-cnn", 1).locator("td[data-label=Lineage]").inner_text()
