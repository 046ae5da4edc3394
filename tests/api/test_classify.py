"""/classify through the real app and a spawned worker, with the committed default models."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers import accuracy, held_out_digits, held_out_sentences, png_base64


def assert_error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code:
        assert error["code"] == code
    return error


def test_classifies_held_out_sentences_with_the_default_text_model(client: TestClient) -> None:
    texts, expected = held_out_sentences(100)
    response = client.post("/classify", json={"inputs": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "sentiment" and body["version"] >= 1
    assert len(body["results"]) == len(texts)
    first = body["results"][0]
    assert set(first["scores"]) == {"negative", "positive"}
    assert abs(sum(first["scores"].values()) - 1) < 1e-4
    assert first["score"] == max(first["scores"].values())
    assert accuracy([r["label"] for r in body["results"]], expected) >= 0.75


def test_results_keep_input_order_and_top_k_limits_scores(client: TestClient) -> None:
    texts = ["This is a terrible waste of money.", "I love it, works great!"] * 3
    response = client.post("/classify", json={"model": "sentiment", "inputs": texts, "top_k": 1})
    results = response.json()["results"]
    assert [r["label"] for r in results] == ["negative", "positive"] * 3
    assert all(len(r["scores"]) == 1 and r["label"] in r["scores"] for r in results)


def test_classifies_held_out_digit_pngs_with_the_default_image_model(client: TestClient) -> None:
    images, expected = held_out_digits(60)
    response = client.post("/classify", json={"images": images, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits"
    assert all(len(r["scores"]) == 3 for r in body["results"])
    assert accuracy([r["label"] for r in body["results"]], expected) >= 0.9


def test_rgb_png_is_accepted_as_grayscale(client: TestClient) -> None:
    images, expected = held_out_digits(1)
    gray = Image.open(io.BytesIO(base64.b64decode(images[0])))
    buffer = io.BytesIO()
    gray.convert("RGB").save(buffer, format="PNG")
    rgb = base64.b64encode(buffer.getvalue()).decode()
    response = client.post("/classify", json={"model": "digits", "images": [rgb]})
    assert response.json()["results"][0]["label"] == expected[0]


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/classify", json={"model": "nope", "inputs": ["hi there"]})
    assert "nope" in assert_error(response, 404, "not_found")["message"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/classify", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error")


def test_missing_inputs_is_422(client: TestClient) -> None:
    assert_error(client.post("/classify", json={"model": "sentiment"}), 422, "validation_error")
    assert_error(client.post("/classify", json={"inputs": []}), 422)
    assert_error(client.post("/classify", json={"inputs": ["a"], "images": ["b"]}), 422)
    assert_error(client.post("/classify", json={"inputs": ["a"], "top_k": 0}), 422)


def test_empty_text_and_too_many_inputs_are_422(client: TestClient) -> None:
    assert_error(client.post("/classify", json={"inputs": ["   "]}), 422, "invalid_input")
    error = assert_error(client.post("/classify", json={"inputs": ["ok"] * 300}), 422)
    assert "limit" in error["message"]


def test_image_that_is_not_a_png_is_400(client: TestClient) -> None:
    jpeg = io.BytesIO()
    Image.new("L", (8, 8)).save(jpeg, format="JPEG")
    for data in (base64.b64encode(jpeg.getvalue()).decode(), "not base64!!", "aGVsbG8="):
        response = client.post("/classify", json={"images": [data]})
        assert_error(response, 400, "invalid_image")


def test_truncated_png_is_400(client: TestClient) -> None:
    images, _ = held_out_digits(1)
    raw = base64.b64decode(images[0])
    truncated = base64.b64encode(raw[: len(raw) // 2]).decode()
    assert_error(client.post("/classify", json={"images": [truncated]}), 400, "invalid_image")


def test_image_of_the_wrong_size_is_400(client: TestClient) -> None:
    image = png_base64(np.zeros((28, 28), dtype=np.float32))
    error = assert_error(client.post("/classify", json={"images": [image]}), 400)
    assert error["code"] == "invalid_image_size" and "8x8" in error["message"]


def test_text_sent_to_an_image_model_is_400(client: TestClient) -> None:
    response = client.post("/classify", json={"model": "digits", "inputs": ["seven"]})
    assert "images" in assert_error(response, 400, "wrong_input_type")["message"]


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/classify", json={"inputs": ["x" * 70_000]})
    assert_error(response, 413, "payload_too_large")


def test_wrong_method_and_unknown_path_keep_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/classify"), 405)
    assert_error(client.get("/nowhere"), 404, "not_found")
