"""LangChain's `ChatOpenAI`, unchanged, chats with genserve over /v1/chat/completions.

Only `base_url` and `api_key` differ from talking to OpenAI. tiktoken (which LangChain uses to
count tokens, and which downloads its encodings on first use) is made to fail here, so the
test proves that invoking and streaming never need it, nor the network.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import Server
from tests.e2e.text_server import API_KEY, BPE_MODEL, CHAR_MODEL, start_text_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_text_server(tmp_path_factory.mktemp("e2e-tools"))
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tiktoken encodings (a download on first use) and no LangSmith tracing (an upload)."""
    import tiktoken

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken was asked for an encoding: that downloads it")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "encoding_for_model", refuse)
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def chat_model(  # type: ignore[no-untyped-def]
    server: Server, model: str, api_key: str = API_KEY, **kwargs: object
):
    """ChatOpenAI as its docs show it, with genserve's address and key."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=f"{server.url}/v1",
        api_key=api_key,
        model=model,
        max_retries=0,  # an error is to be seen, not retried
        timeout=60,
        **kwargs,
    )


@pytest.mark.parametrize("model", [CHAR_MODEL, BPE_MODEL])
def test_langchain_chat_invokes_and_streams(server: Server, model: str) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    chat = chat_model(server, model, max_tokens=40, temperature=0.8, seed=7)
    messages = [
        SystemMessage("You are a player in a Shakespeare comedy."),
        HumanMessage("Speak, speak. What news from Padua?"),
    ]
    reply = chat.invoke(messages)
    assert isinstance(reply.content, str) and reply.content.strip(), reply
    assert reply.response_metadata["model_name"] == model
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    usage = reply.usage_metadata
    assert usage and 0 < usage["output_tokens"] <= 40 and usage["input_tokens"] > 0

    # the same seed and parameters give the same text, streamed or not
    assert chat.invoke(messages).content == reply.content
    chunks = list(chat.stream(messages, stream_usage=True))
    assert len(chunks) > 1, "streamed as one piece"
    assert "".join(str(chunk.content) for chunk in chunks) == reply.content
    assert any(chunk.usage_metadata for chunk in chunks), "no usage in the stream"


def test_langchain_sees_errors_as_openai_errors(server: Server) -> None:
    """What the server refuses reaches LangChain as the OpenAI SDK's typed errors."""
    import openai

    with pytest.raises(openai.NotFoundError):
        chat_model(server, "no-such-model").invoke("Hello")
    with pytest.raises(openai.AuthenticationError):
        chat_model(server, CHAR_MODEL, api_key="not-a-key").invoke("Hello")
