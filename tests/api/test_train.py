"""/train from the client's side: what is refused before queueing, and the job lifecycle
up to cancellation (no runner here: jobs stay queued; tests/e2e trains for real)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from models.kinds import Kind


def submit(client: TestClient, **body: object) -> tuple[int, dict]:
    response = client.post("/train", json=body)
    return response.status_code, response.json()


def test_kinds_list_every_family_with_typed_bounded_params(client: TestClient) -> None:
    data = client.get("/train/kinds").json()["data"]
    kinds = {k["kind"]: k for k in data}
    assert set(kinds) == {
        "text-ngram",
        "text-lstm",
        "text-gru",
        "text-gpt",
        "image-gan",
        "image-diffusion",
        "image-vae",
        "classify-nb",
        "classify-logreg",
        "classify-mlp",
        "classify-rnn",
        "classify-cnn",
    }
    gpt = {p["name"]: p for p in kinds["text-gpt"]["params"]}
    assert gpt["max_steps"]["type"] == "integer" and gpt["max_steps"]["minimum"] == 1
    assert gpt["lr"]["default"] == 1e-3 and gpt["lr"]["description"]
    rnn = {p["name"]: p for p in kinds["classify-rnn"]["params"]}
    assert rnn["level"]["enum"] == ["char", "word"]
    assert kinds["classify-cnn"]["dataset_kinds"] == ["images"]
    assert kinds["image-gan"]["task"] == "image-generation"


def test_bad_jobs_are_refused_before_queueing(client: TestClient) -> None:
    base = {"dataset": "tinyshakespeare", "name": "lm"}
    status, body = submit(client, kind="text-transformer-xl", **base)
    assert status == 422 and "text-gpt" in body["error"]["message"]

    status, body = submit(client, kind="text-gpt", params={"max_steps": 0, "dropuot": 0.1}, **base)
    assert status == 422
    locs = [d["loc"] for d in body["error"]["details"]]
    assert ["params", "max_steps"] in locs and ["params", "dropuot"] in locs

    status, body = submit(client, kind="text-gpt", params={"n_embd": 30, "n_head": 4}, **base)
    assert status == 422 and "divisible" in body["error"]["message"]

    # a GPU per worker is Ray Train's (GENSERVE_TRAIN_BACKEND=ray); the global batch splits
    status, body = submit(client, kind="text-gpt", params={"use_gpu": True}, **base)
    assert status == 422 and "GENSERVE_TRAIN_BACKEND=ray" in body["error"]["message"]
    params = {"num_workers": 3, "batch_size": 16}
    status, body = submit(client, kind="text-gpt", params=params, **base)
    assert status == 422 and "multiple of num_workers" in body["error"]["message"]

    status, body = submit(client, kind="text-gpt", dataset="digits", name="lm")
    assert status == 422
    assert "text datasets" in body["error"]["message"] and "images" in body["error"]["message"]

    status, body = submit(client, kind="classify-cnn", dataset="sentiment", name="c")
    assert status == 422

    status, body = submit(client, kind="text-gpt", dataset=999_999, name="lm")
    assert status == 404

    status, body = submit(client, kind="text-gpt", dataset="tinyshakespeare", name="../etc")
    assert status == 422

    # the name belongs to a classifier: a language model cannot become its next version
    status, body = submit(client, kind="text-ngram", dataset="tinyshakespeare", name="sentiment")
    assert status == 409 and "classification" in body["error"]["message"]
    assert client.get("/train", params={"name": "lm"}).json()["count"] == 0


def test_queued_job_lifecycle_listing_and_cancel(client: TestClient) -> None:
    response = client.post(
        "/train",
        json={
            "kind": "classify-nb",
            "dataset": "sentiment",
            "name": "nb-test",
            "params": {"alpha": 0.5},
        },
    )
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/train/{job['id']}"
    assert job["params"]["alpha"] == 0.5 and job["params"]["min_df"] == 2  # defaults recorded

    detail = client.get(response.headers["location"]).json()
    assert detail["status"] == "queued" and detail["history"] == []

    other = client.post(
        "/train", json={"kind": "text-ngram", "dataset": "tinyshakespeare", "name": "ng-test"}
    ).json()
    listed = client.get("/train", params={"status": "queued", "limit": 1}).json()
    assert listed["count"] >= 2 and [j["id"] for j in listed["data"]] == [other["id"]]
    by_kind = client.get("/train", params={"kind": "classify-nb"}).json()["data"]
    assert job["id"] in [j["id"] for j in by_kind] and other["id"] not in [j["id"] for j in by_kind]

    cancelled = client.post(f"/train/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    again = client.post(f"/train/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert client.post("/train/123456/cancel").status_code == 404
    assert client.get("/train/123456").status_code == 404
    assert client.get("/train", params={"status": "exploded"}).status_code == 422


def test_a_new_kind_is_listed_and_validated(client: TestClient, centroid_kind: Kind) -> None:
    """A row added to models/kinds.py is all the API needs (tests/models/test_add_a_kind.py)."""
    kinds = {k["kind"]: k for k in client.get("/train/kinds").json()["data"]}
    assert kinds["classify-centroid"]["task"] == "classification"
    assert kinds["classify-centroid"]["dataset_kinds"] == ["images"]
    shrink = {p["name"]: p for p in kinds["classify-centroid"]["params"]}["shrink"]
    assert shrink["default"] == 0.0 and shrink["maximum"] == 1
    status, body = submit(
        client, kind="classify-centroid", dataset="digits", name="c", params={"shrink": 2}
    )
    assert status == 422
    assert [d["loc"] for d in body["error"]["details"]] == [["params", "shrink"]]


def test_a_fine_tune_keeps_its_parents_architecture_or_is_refused(client: TestClient) -> None:
    """tiny-gpt (a committed default here): 2 layers, 2 heads, 32 wide, 32-token context."""
    base = {"kind": "text-gpt", "dataset": "tinyshakespeare", "name": "ft"}
    parent = {"model": "tiny-gpt"}
    status, body = submit(client, **base, params={"n_layer": 4, "n_embd": 32}, **{"from": parent})
    assert status == 422 and body["error"]["code"] == "architecture_mismatch"
    assert body["error"]["details"] == [{"param": "n_layer", "requested": 4, "parent": 2}]
    assert "n_layer 4 (parent: 2)" in body["error"]["message"]

    status, body = submit(client, **{**base, "kind": "text-lstm"}, **{"from": parent})
    assert status == 422 and "text-gpt" in body["error"]["message"]
    status, body = submit(client, **base, **{"from": {"model": "tiny-gpt", "version": 9}})
    assert status == 422 and "version 9" in body["error"]["message"]
    status, body = submit(client, **base, **{"from": {"model": "no-such-model"}})
    assert status == 422 and "no-such-model" in body["error"]["message"]
    sentiment = {"kind": "classify-logreg", "dataset": "sentiment", "name": "s2"}
    status, body = submit(client, **sentiment, **{"from": {"model": "sentiment"}})
    assert status == 422 and "classify-logreg cannot be fine-tuned" in body["error"]["message"]

    # a character model reads only the characters it knows
    odd = "".join(chr(c) for c in range(0x400, 0x464)) * 5
    uploaded = client.post("/datasets", files={"file": ("cyrillic.txt", odd.encode())})
    assert uploaded.status_code == 201, uploaded.text
    status, body = submit(client, **{**base, "dataset": uploaded.json()["id"]}, **{"from": parent})
    assert status == 422 and "tokenizer" in body["error"]["message"]

    # training params may differ; the architecture comes from the parent, params it names
    # with the parent's own values are accepted
    params = {"max_steps": 5, "lr": 3e-4, "n_head": 2}
    status, job = submit(client, **base, params=params, **{"from": {"model": "tiny-gpt"}})
    assert status == 202, job
    assert job["params"]["from"] == {"model": "tiny-gpt", "version": 1}
    assert (job["params"]["n_layer"], job["params"]["n_embd"], job["params"]["block_size"]) == (
        2,
        32,
        32,
    )
    assert job["params"]["lr"] == 3e-4
    assert client.post(f"/train/{job['id']}/cancel").status_code == 200


def test_image_fine_tunes_keep_the_parents_images_and_classes(client: TestClient) -> None:
    """digits: a committed 8x8 CNN (hidden 128); tiny-cvae: a conditional 28x28 VAE."""
    cnn = {"kind": "classify-cnn", "dataset": "digits", "name": "ft-cnn"}
    status, body = submit(client, **cnn, params={"hidden": 64}, **{"from": {"model": "digits"}})
    assert status == 422 and body["error"]["details"] == [
        {"param": "hidden", "requested": 64, "parent": 128}
    ]
    vae = {"kind": "image-vae", "dataset": "digits", "name": "ft-vae"}
    status, body = submit(client, **vae, **{"from": {"model": "tiny-cvae"}})
    assert status == 422 and "8x8, the parent's 28x28" in body["error"]["message"]
    gan = {"kind": "image-gan", "dataset": "digits", "name": "ft-gan"}
    status, body = submit(client, **gan, **{"from": {"model": "tiny-cvae"}})
    assert status == 422 and "image-gan cannot be fine-tuned" in body["error"]["message"]

    status, job = submit(client, **cnn, params={"epochs": 1}, **{"from": {"model": "digits"}})
    assert status == 202, job
    assert (job["params"]["hidden"], job["params"]["dropout"]) == (128, 0.25)
    assert client.post(f"/train/{job['id']}/cancel").status_code == 200
