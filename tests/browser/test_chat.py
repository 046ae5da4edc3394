"""The playground's token alternatives and its Chat panel in a real browser: the alternatives
of a generated token (by mouse, keyboard and touch), a streamed chat reply whose conversation
is sent back with the next message, Stop, a refused message, and neither a CSP violation nor a
console error on the way. Screenshots go to var/screenshots/."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Console, open_page
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "␣"}
# Installed before the page's own scripts run, so that a violation while loading counts too.
CSP_WATCH = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def visible(token: str) -> str:
    """A token as the alternatives box writes it."""
    return "".join(ESCAPES.get(c, c) for c in token) or "∅"


def watched(page: Any) -> Any:
    page.context.add_init_script(CSP_WATCH)
    page.reload()
    page.wait_for_selector("#chat-model option[value=tiny-gpt]", state="attached")
    return page


def finish(page: Any, console: Console) -> None:
    violations = page.evaluate("window.cspViolations")
    page.context.close()
    assert not violations, violations
    assert not console.unexpected(), console.errors
    assert not console.blocked, f"requests outside the server: {console.blocked}"


@pytest.fixture
def chat_page(browser: Any, server: Server, console: Console) -> Iterator[Any]:
    page = watched(open_page(browser, server, console, viewport={"width": 1280, "height": 900}))
    yield page
    finish(page, console)


def generate(page: Any, tokens: int, seed: int = 1) -> None:
    page.select_option("#text-model", "tiny-gpt")
    page.fill("#text-prompt", "ROMEO:")
    page.fill("input[name=max_new_tokens]", str(tokens))
    page.fill("#text-form input[name=seed]", str(seed))
    page.click("#text-go")
    page.wait_for_selector("#text-output[data-state=done]")


def shown_alternatives(page: Any) -> list[tuple[str, float, bool]]:
    """The box's rows: token as written, probability in percent, whether it is the chosen one."""
    rows = page.locator("#token-alts li")
    shown = []
    for i in range(rows.count()):
        row = rows.nth(i)
        percent = row.locator("span").first.inner_text().rstrip("%").lstrip("<")
        chosen = "chosen" in (row.get_attribute("class") or "")
        shown.append((row.locator("code").inner_text(), float(percent), chosen))
    return shown


def test_token_alternatives_by_mouse_and_keyboard(
    chat_page: Any, server: Server, screenshot: Any
) -> None:
    page = chat_page
    generate(page, 40)
    spans = page.locator("#text-output .tok")
    assert spans.count() == 40
    assert "".join(spans.all_text_contents()) == page.inner_text("#text-output .generated")
    # What the page shows is what the API answers for the same seeded request.
    api = server.client.post(
        "/generate/text",
        json={
            "model": "tiny-gpt",
            "prompt": "ROMEO:",
            "max_new_tokens": 40,
            "seed": 1,
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 1,
            "repetition_penalty": 1,
            "top_logprobs": 5,
        },
    ).json()["choices"][0]["tokens"]
    assert [t["token"] for t in api] == spans.all_text_contents()

    assert page.locator("#token-alts").is_hidden()
    spans.nth(7).hover()
    page.wait_for_selector("#token-alts:not([hidden])")
    shown = shown_alternatives(page)
    expected = api[7]
    top = [(visible(a["token"]), 100 * math.exp(a["logprob"])) for a in expected["top_logprobs"]]
    assert [token for token, _, _ in shown[:5]] == [token for token, _ in top]
    for (_, percent, _), (_, wanted) in zip(shown, top, strict=False):
        assert percent == pytest.approx(wanted, rel=0.06, abs=0.01)
    chosen = [token for token, _, is_chosen in shown if is_chosen]
    assert chosen == [visible(expected["token"])]  # highlighted, listed once
    assert page.locator("#token-alts li.chosen .visually-hidden").inner_text() == "(chosen)"
    screenshot(page.locator("#text"), "text-token-alternatives")
    page.mouse.move(5, 5)  # off the text: the box goes
    page.wait_for_selector("#token-alts[hidden]", state="attached")

    # Keyboard: the output is one tab stop; the arrows move between its tokens.
    page.focus("#text-output")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == api[0]["token"]
    assert page.evaluate("document.activeElement.getAttribute('aria-describedby')") == (
        "token-alts"
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    chosen = [token for token, _, is_chosen in shown_alternatives(page) if is_chosen]
    assert chosen == [visible(api[2]["token"])]
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.textContent") == api[-1]["token"]
    page.keyboard.press("Escape")
    page.wait_for_selector("#token-alts[hidden]", state="attached")
    assert page.evaluate("document.activeElement.id") == "text-output"


def test_chat_streams_replies_and_keeps_the_conversation(
    chat_page: Any, server: Server, screenshot: Any
) -> None:
    page = chat_page
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: r.url.endswith("/v1/chat/completions") and sent.append(r.post_data_json),
    )
    page.click("nav a[href='#chat']")
    values = page.eval_on_selector_all("#chat-model option", "os => os.map((o) => o.value)")
    assert values[0] == "" and "tiny-gpt" in values  # "Server default" comes first
    assert page.input_value("#chat-model") == ""
    page.fill("#chat-form input[name=seed]", "1")
    page.fill("#chat-form input[name=max_tokens]", "40")
    page.evaluate(
        """() => {
        window.chatUpdates = 0;
        new MutationObserver((records) => { window.chatUpdates += records.length; })
          .observe(document.querySelector('#chat-log'),
                   {subtree: true, childList: true, characterData: true});
        }"""
    )
    # Shift+Enter is a new line; Enter sends.
    page.click("#chat-input")
    page.keyboard.type("Good morrow.")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("How now?")
    assert page.input_value("#chat-input") == "Good morrow.\nHow now?"
    assert not sent
    page.keyboard.press("Enter")
    page.wait_for_selector("#chat-status:text('finished')")
    assert page.input_value("#chat-input") == ""
    assert page.locator(".msg.user .msg-text").inner_text() == "Good morrow.\nHow now?"
    reply = page.locator(".msg.assistant .msg-text").last.text_content()
    assert reply and page.evaluate("window.chatUpdates") >= 10  # grew chunk by chunk
    assert "tokens" in page.inner_text("#chat-status")
    assert sent[0]["stream"] is True and "model" not in sent[0]  # the server's default
    assert sent[0]["messages"] == [{"role": "user", "content": "Good morrow.\nHow now?"}]
    assert sent[0]["max_tokens"] == 40 and sent[0]["temperature"] == 0.8
    # The same request, unstreamed, answers the same words.
    again = server.client.post(
        "/v1/chat/completions", json={**sent[0], "stream": False, "stream_options": None}
    )
    assert again.json()["choices"][0]["message"]["content"] == reply

    # The next message carries the conversation, and a system message when one is given.
    page.fill("#chat-form input[name=system]", "A play.")
    page.select_option("#chat-model", "tiny-gpt")
    page.fill("#chat-input", "Speak again.")
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length === 2")
    page.wait_for_selector("#chat-send:not([disabled])")
    assert sent[1]["model"] == "tiny-gpt"
    assert sent[1]["messages"] == [
        {"role": "system", "content": "A play."},
        {"role": "user", "content": "Good morrow.\nHow now?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Speak again."},
    ]
    screenshot(page.locator("#chat"), "chat")

    page.click("#chat-clear")
    assert page.locator(".msg").count() == 0
    page.fill("#chat-input", "Anew.")
    page.click("#chat-send")
    page.wait_for_selector("#chat-status:text('finished')")
    assert [m["role"] for m in sent[2]["messages"]] == ["system", "user"]


def test_chat_stop_keeps_the_partial_reply(chat_page: Any) -> None:
    page = chat_page
    page.click("nav a[href='#chat']")
    page.fill("#chat-form input[name=max_tokens]", "1024")
    page.fill("#chat-form input[name=seed]", "3")
    # Stop as soon as the first words arrive, from the page itself (no race with the test).
    page.evaluate(
        """() => new MutationObserver((records, observer) => {
          const reply = document.querySelector('.msg.assistant .msg-text');
          if (reply && reply.textContent) {
            observer.disconnect();
            document.querySelector('#chat-stop').click();
          }
        }).observe(document.querySelector('#chat-log'),
                   {subtree: true, childList: true, characterData: true})"""
    )
    page.fill("#chat-input", "Tell me all.")
    page.press("#chat-input", "Enter")
    page.wait_for_selector(".msg.assistant.stopped")
    assert page.inner_text("#chat-status") == "Stopped."
    assert page.is_disabled("#chat-stop") and page.is_enabled("#chat-send")
    partial = page.locator(".msg.assistant .msg-text").text_content()
    assert partial and len(partial) < 1024


def test_refused_message_is_shown_then_cleared(chat_page: Any, console: Console) -> None:
    page = chat_page
    console.allowed.append("422")  # Chromium logs the refused response
    page.click("nav a[href='#chat']")
    page.fill("#chat-input", "Caf\u00e9 \u2713")  # not in the model's vocabulary
    page.click("#chat-send")
    page.wait_for_selector("#chat-status.error")
    assert "vocabulary" in page.inner_text("#chat-status")
    assert page.locator(".msg").count() == 0  # the turn was taken back
    assert page.input_value("#chat-input") == "Caf\u00e9 \u2713"  # to edit and send again
    page.fill("#chat-input", "Cafe")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#chat-status:text('finished')")
    assert "error" not in (page.get_attribute("#chat-status", "class") or "")


def test_phone_shows_alternatives_and_chat_without_overflow(
    browser: Any, server: Server, console: Console, screenshot: Any
) -> None:
    page = open_page(
        browser, server, console, viewport={"width": 375, "height": 812}, has_touch=True
    )
    watched(page)
    generate(page, 200, seed=2)
    last = page.locator("#text-output .tok").last
    last.scroll_into_view_if_needed()
    last.tap()
    box = page.wait_for_selector("#token-alts:not([hidden])")
    bounds = box.bounding_box()
    assert bounds["x"] >= 0 and bounds["x"] + bounds["width"] <= 375, bounds
    screenshot(page, "text-token-alternatives-phone")
    page.click("nav a[href='#chat']")
    page.fill("#chat-form input[name=seed]", "1")
    page.fill("#chat-input", "A long line without a break: " + "la" * 80)
    page.click("#chat-send")
    page.wait_for_selector("#chat-status:text('finished')")
    overflow = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
          .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1
                       && !el.parentElement.closest('.table-wrap'))
          .map((el) => el.id || el.className || el.tagName)"""
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, overflow
    assert not overflow
    screenshot(page.locator("#chat"), "chat-phone")
    assert re.fullmatch(r"\d+ tokens, finished: \w+", page.inner_text("#chat-status"))
    finish(page, console)
