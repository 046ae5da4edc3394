"""Chat messages to a prompt, through the chat template kept in the model's config.json.

A template is Jinja, as in Hugging Face's tokenizer configs, rendered in a sandbox because a
training job's submitter writes it. It sees `messages` (role, name, content) and
`add_generation_prompt`; `stop` lists where the assistant's turn ends.

The default, for models trained on plain text, writes every turn the way plays are printed
(and the Shakespeare corpus is written): the speaker's name in capitals, a colon and a
newline, the text, then a blank line. The speaker is the message's `name`, or else USER or
ASSISTANT; a system message is a paragraph of its own. The reply is the assistant's turn,
ended at the next blank line.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import InvalidInput
from app.schemas.chat import ChatMessage

DEFAULT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role in ('system', 'developer') %}{{ m.content }}\n\n"
    "{% else %}{{ (m.name or ('ASSISTANT' if m.role == 'assistant' else 'USER')) | upper }}:\n"
    "{{ m.content }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:\n{% endif %}"
)
DEFAULT_STOP = ["\n\n"]
TEMPLATE_MAX_CHARS = 8_000


@lru_cache(maxsize=64)
def _compile(template: str) -> Any:
    return ImmutableSandboxedEnvironment(trim_blocks=False).from_string(template)


def check_template(template: str) -> None:
    """Refuses a template that does not compile (at job submission, not at the first chat)."""
    if len(template) > TEMPLATE_MAX_CHARS:
        raise ValueError(f"chat_template has {len(template)} characters; at most 8000")
    try:
        _compile(template).render(messages=[], add_generation_prompt=True)
    except TemplateError as e:
        raise ValueError(f"chat_template does not render: {e}") from e


def chat_prompt(config: dict[str, Any], messages: list[ChatMessage]) -> tuple[str, list[str]]:
    """The prompt for `messages` and the stop strings ending the reply."""
    chat = config.get("chat") or {}
    template = chat.get("template") or DEFAULT_TEMPLATE
    stop = list(chat.get("stop", DEFAULT_STOP))
    turns = [{"role": m.role, "name": m.name, "content": m.text()} for m in messages]
    try:
        prompt = _compile(template).render(messages=turns, add_generation_prompt=True)
    except TemplateError as e:
        raise InvalidInput(f"the model's chat template failed on these messages: {e}") from e
    return prompt, stop
