"""/images/encode, /images/reconstruct and /images/interpolate through the real pool, on the
committed VAEs (mnist-vae, the default, and the conditional mnist-cvae) and the tiny ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from tests.api.test_generate_image import pixels
from tests.helpers import held_out_mnist, png_base64


def post(client: TestClient, path: str, **body: object) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error(client: TestClient, path: str, status: int, **body: object) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()["error"]


def noise_pngs(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [png_base64(rng.random((28, 28))) for _ in range(count)]


def test_encode_gives_the_same_mean_alone_and_in_a_batch(client: TestClient) -> None:
    digits, _ = held_out_mnist(6)
    response = client.post("/images/encode", json={"images": digits[:1]})
    assert response.status_code == 200, response.text
    assert (response.headers["x-model"], response.headers["x-model-version"]) == ("mnist-vae", "1")
    alone = response.json()
    assert (alone["model"], alone["latent_dim"]) == ("mnist-vae", 16)
    code = alone["codes"][0]
    assert len(code["mean"]) == len(code["logvar"]) == 16 and code["label"] is None
    assert max(code["logvar"]) < 0  # the posterior is narrower than the N(0, I) prior

    def encode(images: list[str]) -> list[dict]:
        return post(client, "/images/encode", images=images)["codes"]

    with ThreadPoolExecutor(4) as pool:  # batched in the worker with one another
        batches = list(pool.map(encode, [digits, digits[3:], digits[1:4], digits[:2]]))
    for batch in (batches[0], batches[3]):
        np.testing.assert_allclose(batch[0]["mean"], code["mean"], atol=1e-4)
        np.testing.assert_allclose(batch[0]["logvar"], code["logvar"], atol=1e-4)
    np.testing.assert_allclose(batches[0][3]["mean"], batches[1][0]["mean"], atol=1e-4)
    assert not np.allclose(batches[0][1]["mean"], code["mean"], atol=0.1)


def test_reconstructions_are_close_and_digits_score_below_noise(client: TestClient) -> None:
    digits, labels = held_out_mnist(16)
    body = post(client, "/images/reconstruct", images=digits + noise_pngs(4))
    assert (body["model"], body["width"], body["height"]) == ("mnist-vae", 28, 28)
    scores = [image["neg_elbo"] for image in body["images"]]
    assert max(scores[:16]) < min(scores[16:])  # noise is unlike anything trained on
    assert 40 < np.median(scores[:16]) < 200  # near the card's held-out 105.7 nats
    for digit, image in zip(digits, body["images"][:16], strict=True):
        error = np.abs(pixels(image["png_base64"]) / 255 - pixels(digit) / 255).mean()
        assert error < 0.1

    # a conditional VAE given no labels finds each digit's class, and scores it the same way
    conditional = post(client, "/images/reconstruct", model="mnist-cvae", images=digits)
    found = [image["label"] for image in conditional["images"]]
    assert sum(f == y for f, y in zip(found, labels, strict=True)) >= 14
    noise = post(client, "/images/reconstruct", model="mnist-cvae", images=noise_pngs(4))
    assert max(i["neg_elbo"] for i in conditional["images"]) < min(
        i["neg_elbo"] for i in noise["images"]
    )
    given = post(client, "/images/encode", model="mnist-cvae", images=digits[:2], labels=[5, 5])
    assert [c["label"] for c in given["codes"]] == [5, 5]


def test_reconstruct_as_one_png_grid_with_the_scores_in_a_header(client: TestClient) -> None:
    digits, _ = held_out_mnist(4)
    response = client.post(
        "/images/reconstruct", json={"images": digits}, headers={"Accept": "image/png"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    scores = [float(s) for s in response.headers["x-neg-elbo"].split(",")]
    as_json = post(client, "/images/reconstruct", images=digits)["images"]
    np.testing.assert_allclose(scores, [i["neg_elbo"] for i in as_json], atol=0.01)


def test_interpolation_ends_are_the_decodes_of_the_two_ends(client: TestClient) -> None:
    digits, _ = held_out_mnist(2)
    strip = post(client, "/images/interpolate", images=digits, steps=6)
    assert strip["model"] == "mnist-vae" and strip["label"] is None
    frames = [pixels(i["png_base64"]).astype(int) for i in strip["images"]]
    recon = post(client, "/images/reconstruct", images=digits)["images"]
    assert len(frames) == 6
    assert np.abs(frames[0] - pixels(recon[0]["png_base64"])).max() <= 1
    assert np.abs(frames[-1] - pixels(recon[1]["png_base64"])).max() <= 1
    assert np.abs(frames[2] - frames[0]).mean() > 1  # the middle is neither end

    # two seeds: the ends are what /generate/image draws for each seed
    seeded = post(client, "/images/interpolate", seeds=[3, 4], steps=4, model="mnist-cvae", label=7)
    assert seeded["label"] == 7 and all(i["label"] == 7 for i in seeded["images"])
    ends = [pixels(seeded["images"][k]["png_base64"]).astype(int) for k in (0, -1)]
    for end, seed in zip(ends, (3, 4), strict=True):
        sample = post(client, "/generate/image", model="mnist-cvae", n=1, seed=seed, label=7)
        assert np.abs(end - pixels(sample["images"][0]["png_base64"])).max() <= 1

    response = client.post(
        "/images/interpolate",
        json={"seeds": [1, 2], "steps": 5, "model": "tiny-vae"},
        headers={"Accept": "image/png"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == "tiny-vae"
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(response.content)).size == (5 * 30 + 2, 30 + 2)  # one row


def test_bad_requests_are_refused_clearly(client: TestClient) -> None:
    digits, _ = held_out_mnist(2)
    for model, kind in (("mnist-gan", "image-gan"), ("mnist-diffusion", "image-diffusion")):
        for path, body in (
            ("/images/encode", {"images": digits}),
            ("/images/reconstruct", {"images": digits}),
            ("/images/interpolate", {"seeds": [1, 2]}),
        ):
            refused = error(client, path, 422, model=model, **body)
            assert refused["code"] == "no_encoder"
            assert model in refused["message"] and kind in refused["message"]
    assert error(client, "/images/encode", 404, model="no-such-vae", images=digits)
    assert error(client, "/images/encode", 404, model="mnist-vae@7", images=digits)
    assert error(client, "/images/encode", 404, model="mnist-vae@nope", images=digits)
    pinned = client.post("/images/encode", json={"model": "mnist-vae@1", "images": digits})
    assert pinned.status_code == 200 and pinned.headers["x-model-version"] == "1"
    assert client.put("/models/mnist-vae/aliases/stable", json={"version": 1}).status_code == 200
    try:
        aliased = post(client, "/images/interpolate", model="mnist-vae@stable", seeds=[1, 2])
        assert (aliased["model"], aliased["version"], len(aliased["images"])) == ("mnist-vae", 1, 8)
    finally:
        client.delete("/models/mnist-vae/aliases/stable")
    assert error(client, "/images/encode", 400, model="shakespeare-gpt", images=digits)

    label = error(client, "/images/interpolate", 422, seeds=[1, 2], label=3)  # mnist-vae
    assert label["code"] == "invalid_label" and "unconditional" in label["message"]
    labels = error(client, "/images/encode", 422, images=digits, labels=[1, 2])
    assert labels["code"] == "invalid_label"
    count = error(client, "/images/encode", 422, model="mnist-cvae", images=digits, labels=[1])
    assert "2 images" in count["message"]
    assert error(client, "/images/encode", 422, model="mnist-cvae", images=digits, labels=[1, 10])

    bad = error(client, "/images/reconstruct", 400, images=[digits[0], "bm90IGEgcG5n"])
    assert bad["code"] == "invalid_image" and "images[1]" in bad["message"]
    small = error(client, "/images/encode", 400, images=[png_base64(np.zeros((8, 8)))])
    assert small["code"] == "invalid_image_size"

    too_many = error(client, "/images/encode", 422, images=digits[:1] * 65)  # limit 64
    assert "limit is 64" in too_many["message"]
    assert (
        "limit is 64"
        in error(client, "/images/interpolate", 422, seeds=[1, 2], steps=65)["message"]
    )
    assert error(client, "/images/interpolate", 422, seeds=[1, 2], steps=1)
    both = error(client, "/images/interpolate", 422, seeds=[1, 2], images=digits)
    assert "exactly one" in str(both)
    assert error(client, "/images/interpolate", 422, seeds=[1])
