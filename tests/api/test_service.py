"""Models, health, readiness, metrics and docs endpoints."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_models_lists_the_defaults_with_versions_metrics_and_workers(client: TestClient) -> None:
    body = client.get("/models").json()
    by_name = {m["name"]: m for m in body["data"]}
    assert body["count"] == len(body["data"])
    assert {"sentiment", "digits"} <= set(by_name)
    digits = by_name["digits"]
    assert digits["task"] == "classification" and digits["input"] == "image"
    assert digits["labels"] == [str(i) for i in range(10)]
    assert digits["workers"] == [0]
    active = [v for v in digits["versions"] if v["is_active"]]
    assert len(active) == 1 and active[0]["version"] == digits["active_version"]
    assert len(active[0]["sha256"]) == 64 and active[0]["size_bytes"] > 0
    assert active[0]["metrics"]["test_accuracy"] >= 0.97
    assert by_name["sentiment"]["versions"][-1]["metrics"]["test_accuracy"] >= 0.80


def test_models_mark_the_defaults_and_the_classes_a_generator_takes(client: TestClient) -> None:
    """The playground picks each task's default and shows the label field from these."""
    by_name = {m["name"]: m for m in client.get("/models").json()["data"]}
    defaults = {name for name, m in by_name.items() if m["default"]}
    assert defaults == {"tiny-gpt", "tiny-cvae", "sentiment", "digits"}
    assert {name for name, m in by_name.items() if m["default_vae"]} == {"mnist-vae"}
    assert by_name["tiny-cvae"]["labels"] == [str(i) for i in range(10)]
    assert by_name["mnist-cgan"]["labels"] == [str(i) for i in range(10)]
    assert by_name["mnist-gan"]["labels"] is None and by_name["tiny-gpt"]["labels"] is None


def test_one_model_and_unknown_model(client: TestClient) -> None:
    assert client.get("/models/sentiment").json()["labels"] == ["negative", "positive"]
    response = client.get("/models/missing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["missing"] == []
    assert set(body["models"]) >= {"sentiment", "digits"}
    assert body["workers"][0]["ready"] and body["workers"][0]["pid"]


def test_metrics_count_requests_batches_and_queues(client: TestClient) -> None:
    client.post("/classify", json={"inputs": ["fine", "bad"]})
    text = client.get("/metrics").text
    assert 'genserve_requests_total{endpoint="/classify",method="POST",model="sentiment"' in text
    assert 'genserve_request_duration_seconds_bucket{endpoint="/classify"' in text
    assert 'genserve_batch_size_count{model="sentiment"}' in text
    assert 'genserve_queue_depth{model="sentiment"} 0.0' in text
    assert "genserve_worker_restarts_total" in text


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/classify", "/models", "/models/{name}", "/healthz", "/readyz"} <= set(spec["paths"])


def test_the_heap_is_frozen_while_serving_and_freed_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Start-up's objects sit outside the collector while the app serves (full collections
    stalled /classify's p99 fourfold), and go back at shutdown, so an app dropped in-process
    is collected rather than kept for good."""
    import gc

    from app.db import migrate
    from app.main import create_app
    from tests.tiny_models import tiny_settings

    settings = tiny_settings(tmp_path, runner_slots=0)
    migrate(settings.db_url)
    with TestClient(create_app(settings)):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
