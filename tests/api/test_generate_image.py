"""/generate/image through the real pool, on tiny untrained VAEs (conditional and not)."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def pixels(png_base64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(png_base64)))
    assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
    return np.asarray(image)


def generate(client: TestClient, **body: object) -> dict:
    response = client.post("/generate/image", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_json_pngs_with_their_labels(client: TestClient) -> None:
    body = generate(client, n=4, seed=1, label=3)
    assert (body["model"], body["width"], body["height"]) == ("tiny-cvae", 28, 28)
    assert len(body["images"]) == 4 and all(i["label"] == 3 for i in body["images"])
    for image in body["images"]:
        pixels(image["png_base64"])
    sampled = generate(client, n=20, seed=2)["images"]
    assert all(0 <= i["label"] <= 9 for i in sampled) and len({i["label"] for i in sampled}) > 1
    plain = generate(client, model="tiny-vae", n=2, seed=1)["images"]
    assert [i["label"] for i in plain] == [None, None]


def test_same_seed_same_pixels_alone_and_batched(client: TestClient) -> None:
    alone = [pixels(i["png_base64"]) for i in generate(client, n=3, seed=7, label=5)["images"]]
    again = [pixels(i["png_base64"]) for i in generate(client, n=3, seed=7, label=5)["images"]]
    assert all((a == b).all() for a, b in zip(alone, again, strict=True))
    other = generate(client, n=3, seed=8, label=5)["images"]
    assert not (pixels(other[0]["png_base64"]) == alone[0]).all()

    def one(seed: int) -> list[np.ndarray]:
        body = {"n": 3 if seed == 7 else 5, "seed": seed, "label": 5 if seed == 7 else 1}
        images = client.post("/generate/image", json=body).json()["images"]
        return [pixels(i["png_base64"]) for i in images]

    with ThreadPoolExecutor(6) as pool:
        batched = list(pool.map(one, [1, 2, 7, 3, 4, 5]))[2]
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(alone, batched, strict=True))


def test_accept_png_returns_one_grid(client: TestClient) -> None:
    response = client.post(
        "/generate/image", json={"n": 4, "seed": 1, "label": 2}, headers={"Accept": "image/png"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(response.content))
    assert grid.mode == "L" and grid.size == (2 + 2 * 30, 2 + 2 * 30)  # 2x2 of 28 + padding


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"n": 0}, 422, "n"),
        ({"n": 65}, 422, "limit"),
        ({"label": 10}, 422, "0 to 9"),
        ({"label": -1}, 422, "label"),
        ({"label": "three"}, 422, "label"),
        ({"model": "tiny-vae", "label": 1}, 422, "unconditional"),
        ({"truncation": 0}, 422, "truncation"),
        ({"model": "nope"}, 404, "nope"),
        ({"model": "sentiment"}, 400, "not an image generator"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, body: dict, status: int, needle: str) -> None:
    response = client.post("/generate/image", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
