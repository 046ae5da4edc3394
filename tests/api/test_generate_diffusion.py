"""/generate/image on a tiny diffusion model trained here for a few steps, through the real pool:
seeds fix the pixels alone or in a batch (whatever steps the neighbours ask for), guidance 0 is
the unconditional model, `stream: true` sends previews every k steps and then the images, and
`steps` / `guidance` / `preview_every` are refused where they do not apply."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.db import migrate
from app.main import create_app
from models.artifacts import save_artifact
from models.data.idx import load_mnist
from models.image.diffusion import DiffusionConfig, UNet
from models.training.diffusion import DiffusionTrainConfig, train_diffusion
from tests.api.test_generate import sse_events
from tests.api.test_generate_image import pixels
from tests.conftest import DATA_DIR, make_settings, wait_until_ready
from tests.tiny_models import small_pretrained


def make_tiny_diffusion(path: Path, name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = UNet(DiffusionConfig(channels=(8, 16, 16), num_classes=num_classes, dropout=0.0))
    if num_classes:  # a few steps on real digits, so outputs depend on noise, label and steps
        x, y, _, _ = load_mnist(DATA_DIR)
        cfg = DiffusionTrainConfig(epochs=2, batch_size=16, warmup_steps=1, ema=0.9)
        train_diffusion(model, x[:64], y[:64], cfg, torch.device("cpu"))
    meta = {
        "name": name,
        "kind": "image-diffusion",
        "task": "image-generation",
        "image_size": [28, 28],
        "num_classes": num_classes,
        "model_args": asdict(model.config),
        "metrics": {},
    }
    save_artifact(path / name, meta, module=model, card=f"# {name}\n\nTiny, for tests.\n")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("diffusion")
    pretrained = small_pretrained(tmp / "pretrained", names=())  # + tiny-gpt, tiny-cvae
    make_tiny_diffusion(pretrained, "tiny-diffusion", 10)
    make_tiny_diffusion(pretrained, "tiny-udiffusion", 0)
    settings = make_settings(
        tmp,
        pretrained_dir=pretrained,
        default_text_model="tiny-gpt",
        default_image_model="tiny-diffusion",
        runner_slots=0,
    )
    migrate(settings.db_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until_ready(test_client.get)
        yield test_client


def images(client: TestClient, **body: object) -> list[np.ndarray]:
    response = client.post("/generate/image", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == body.get("model", "tiny-diffusion")
    return [pixels(i["png_base64"]) for i in response.json()["images"]]


def same(a: list[np.ndarray], b: list[np.ndarray], tolerance: int = 0) -> bool:
    return len(a) == len(b) and all(
        np.abs(x.astype(int) - y).max() <= tolerance for x, y in zip(a, b, strict=True)
    )


def test_same_seed_same_images_alone_and_in_a_batch(client: TestClient) -> None:
    alone = images(client, n=3, seed=7, label=5, steps=8)
    assert same(alone, images(client, n=3, seed=7, label=5, steps=8))
    assert not same(alone, images(client, n=3, seed=8, label=5, steps=8))
    assert not same(alone, images(client, n=3, seed=7, label=5, steps=4))
    assert not same(alone, images(client, n=3, seed=7, label=5, steps=8, guidance=1))
    assert len(images(client, n=2, seed=1)) == 2, "the defaults (50 steps, guidance 1.5) serve"

    # neighbours in the dynamic batch ask for other seeds, labels, steps and guidance
    bodies = [
        {"n": 2, "seed": 1, "steps": 4},
        {"n": 3, "seed": 7, "label": 5, "steps": 8},
        {"n": 4, "seed": 2, "label": 1, "steps": 8},
        {"n": 1, "seed": 3, "steps": 8, "guidance": 0},
        {"n": 2, "seed": 4, "label": 0, "steps": 8, "guidance": 2},
    ]

    def one(body: dict) -> list[np.ndarray]:
        return images(client, **body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(one, bodies))
    assert same(alone, results[1], tolerance=1)  # float sums may differ by one level
    assert same(results[3], images(client, **bodies[3]), tolerance=1)


def test_guidance_zero_is_the_unconditional_model(client: TestClient) -> None:
    three = images(client, n=4, seed=11, label=3, steps=6, guidance=0)
    seven = images(client, n=4, seed=11, label=7, steps=6, guidance=0)
    drawn = images(client, n=4, seed=11, steps=6, guidance=0)  # labels drawn per image
    assert same(three, seven) and same(three, drawn)
    assert not same(three, images(client, n=4, seed=11, label=3, steps=6, guidance=3))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "tiny-cvae", "steps": 10}, "image-diffusion models only"),
        ({"model": "tiny-cvae", "guidance": 2}, "image-diffusion models only"),
        ({"model": "tiny-cvae", "steps": 10, "guidance": 0}, "steps/guidance apply"),
        ({"model": "tiny-udiffusion", "guidance": 2}, "class-conditional models only"),
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"guidance": -0.5}, "guidance"),
        ({"guidance": 21}, "guidance"),
        ({"preview_every": 5}, "preview_every applies with stream: true"),
        ({"model": "tiny-cvae", "stream": True, "preview_every": 5}, "image-diffusion models only"),
        ({"stream": True, "preview_every": 0}, "preview_every"),
    ],
)
def test_options_that_do_not_apply_are_a_422(client: TestClient, body: dict, needle: str) -> None:
    response = client.post("/generate/image", json={"seed": 1, **body})
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


def test_an_unconditional_diffusion_model_takes_steps(client: TestClient) -> None:
    a = images(client, model="tiny-udiffusion", n=2, seed=5, steps=3)
    assert same(a, images(client, model="tiny-udiffusion", n=2, seed=5, steps=3))


def test_a_stream_sends_previews_every_k_steps_then_the_images(client: TestClient) -> None:
    body = {"n": 2, "seed": 21, "label": 3, "steps": 10}
    events = sse_events(client, {**body, "preview_every": 4}, "/generate/image")
    assert [name for name, _ in events] == ["preview", "preview", "done"]
    assert [(e["step"], e["steps"]) for _, e in events[:2]] == [(4, 10), (8, 10)]
    previews = [[pixels(png) for png in e["images"]] for _, e in events[:2]]
    done = events[-1][1]
    assert done["model"] == "tiny-diffusion" and [i["label"] for i in done["images"]] == [3, 3]
    final = [pixels(i["png_base64"]) for i in done["images"]]
    assert same(final, images(client, **body)), "the same images as without stream"
    assert all(p.shape == (28, 28) for p in previews[0]) and not same(previews[0], final)

    default = sse_events(client, {"n": 1, "seed": 1, "steps": 25}, "/generate/image")
    assert [e["step"] for name, e in default if name == "preview"] == [10, 20]
    # a model that does not denoise streams its images in one `done` event
    events = sse_events(client, {"model": "tiny-cvae", "n": 2, "seed": 1}, "/generate/image")
    assert [name for name, _ in events] == ["done"] and len(events[0][1]["images"]) == 2


def test_a_stream_carries_the_model_headers(client: TestClient) -> None:
    body = {"n": 1, "seed": 2, "steps": 3, "stream": True}
    with client.stream("POST", "/generate/image", json=body) as response:
        assert response.status_code == 200
        assert response.headers["x-model"] == "tiny-diffusion"
        assert response.headers["x-model-version"] == "1"
