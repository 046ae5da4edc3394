"""OpenAI's model objects: `models.retrieve` of a served text generator, 404 for anything else,
and `created` is when the served version was registered."""

from __future__ import annotations

import time
from datetime import datetime

import openai
import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def api(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)


def registered_at(client: TestClient, name: str) -> int:
    """Unix seconds of the active version's creation, from genserve's own API."""
    model = client.get(f"/models/{name}").json()
    version = next(v for v in model["versions"] if v["version"] == model["active_version"])
    return int(datetime.fromisoformat(version["created_at"]).timestamp())


def test_retrieve_a_served_model(api: openai.OpenAI, client: TestClient) -> None:
    card = api.models.retrieve("tiny-gpt")
    assert (card.id, card.object, card.owned_by) == ("tiny-gpt", "model", "genserve")
    assert card.created == registered_at(client, "tiny-gpt")
    assert 0 < card.created <= time.time()


def test_listed_models_carry_their_creation_time(api: openai.OpenAI, client: TestClient) -> None:
    cards = {card.id: card for card in api.models.list().data}
    assert cards and all(card.created > 0 for card in cards.values())
    for name, card in cards.items():
        assert card.created == registered_at(client, name), name
        assert api.models.retrieve(name) == card


@pytest.mark.parametrize("name", ["no-such-model", "sentiment"])  # unknown; not a text model
def test_retrieve_anything_else_is_not_found(api: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        api.models.retrieve(name)
    error = caught.value
    assert (error.type, error.code) == ("invalid_request_error", "not_found")
    assert name in error.message
