"""Continuous batching of diffusion requests (app/worker/denoising.py) on a tiny U-Net trained
for a few steps on real digits: images join and leave between steps, a short request is not
held back by a long one, the pixels are those of the request run alone, and previews come
every k steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.worker.batching import Request
from app.worker.denoising import DenoisingEngine
from app.worker.executors import ImageExecutor
from models.data.idx import load_mnist
from models.image.diffusion import DiffusionConfig, DiffusionImageGenerator, UNet
from models.training.diffusion import DiffusionTrainConfig, train_diffusion
from tests.conftest import DATA_DIR


@pytest.fixture(scope="module")
def generator() -> DiffusionImageGenerator:
    torch.manual_seed(0)
    model = UNet(DiffusionConfig(channels=(8, 16, 16), num_classes=10, dropout=0.0))
    x, y, _, _ = load_mnist(DATA_DIR)
    cfg = DiffusionTrainConfig(epochs=2, batch_size=16, warmup_steps=1, ema=0.9)
    train_diffusion(model, x[:64], y[:64], cfg, torch.device("cpu"))
    return DiffusionImageGenerator(model)


def request(request_id: int, n: int, seed: int, **options: object) -> Request:
    params = {"seed": seed, "label": None, "truncation": 1.0, **options}
    return Request(request_id, "tiny", params, n)


def alone(generator: DiffusionImageGenerator, req: Request) -> tuple[list[int] | None, np.ndarray]:
    """What the dynamic batch's executor answers for the request on its own."""
    return ImageExecutor(generator).run([req])[0]


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a.astype(int) - b).max() <= 1)  # float sums may differ by one level


def run(engine: DenoisingEngine) -> tuple[list[tuple[int, int]], dict[int, tuple], list]:
    """Steps until idle: (step number, images in the step) per step, results, previews."""
    sizes, results, previews, step = [], {}, [], 0
    while engine.has_work():
        step += 1
        images, done, due = engine.step()
        sizes.append((step, images))
        results.update({request_id: (step, out) for request_id, out in done})
        previews += due
    return sizes, results, previews


def test_requests_with_other_step_counts_share_steps_and_leave_when_done(
    generator: DiffusionImageGenerator,
) -> None:
    engine = DenoisingEngine(generator, max_images=16)
    long = request(1, 3, seed=1, steps=12, label=4)
    short = request(2, 2, seed=2, steps=4, guidance=0)
    engine.add(long)
    engine.add(short)
    sizes, results, _ = run(engine)
    assert sizes[:4] == [(s, 5) for s in range(1, 5)], "one forward pass for both requests"
    assert sizes[4:] == [(s, 3) for s in range(5, 13)], "the short one left after its 4 steps"
    assert results[2][0] == 4 and results[1][0] == 12
    for req in (long, short):
        labels, pixels = results[req.id][1]
        want_labels, want = alone(generator, req)
        assert labels == want_labels and pixels.shape == (req.rows, 28, 28)
        assert close(pixels, want)


def test_a_request_joins_between_steps_and_is_not_held_back(
    generator: DiffusionImageGenerator,
) -> None:
    engine = DenoisingEngine(generator, max_images=16)
    engine.add(request(1, 2, seed=3, steps=20))
    for _ in range(5):
        engine.step()
    late = request(2, 1, seed=4, steps=3, label=7)
    engine.add(late)
    finished = []
    for _ in range(3):
        images, done, _ = engine.step()
        assert images == 3
        finished += done
    assert [request_id for request_id, _ in finished] == [2], "done while the other runs on"
    assert close(finished[0][1][1], alone(generator, late)[1])
    assert engine.has_work()


def test_images_over_the_limit_wait_for_a_free_place(generator: DiffusionImageGenerator) -> None:
    engine = DenoisingEngine(generator, max_images=4)
    big = request(1, 6, seed=5, steps=3)
    engine.add(big)
    engine.add(request(2, 1, seed=6, steps=2))
    sizes, results, _ = run(engine)
    # 4 of the 6 start; the other 2 and the next request start once those 4 are done
    assert [images for _, images in sizes] == [4, 4, 4, 3, 3, 2]
    assert close(results[1][1][1], alone(generator, big)[1])


def test_previews_every_k_steps_and_cancel(generator: DiffusionImageGenerator) -> None:
    engine = DenoisingEngine(generator, max_images=16)
    engine.add(request(1, 2, seed=7, steps=10, label=1, preview_every=3))
    engine.add(request(2, 1, seed=8, steps=10))  # asked for none
    _, results, previews = run(engine)
    assert [(p.request_id, p.step, p.steps) for p in previews] == [
        (1, 3, 10),
        (1, 6, 10),
        (1, 9, 10),
    ]
    assert all(p.pixels.shape == (2, 28, 28) and p.pixels.dtype == np.uint8 for p in previews)
    assert not np.array_equal(previews[0].pixels, results[1][1][1]), "part-way, not the end"

    engine.add(request(3, 2, seed=9, steps=50))
    engine.add(request(4, 1, seed=9, steps=5))
    engine.step()
    engine.cancel(3)
    sizes, results, _ = run(engine)
    assert list(results) == [4] and all(images == 1 for _, images in sizes)


def test_a_request_the_engine_cannot_take_fails_alone(generator: DiffusionImageGenerator) -> None:
    """Through the worker's inbox: a bad request is a failure for its caller, not a crash of
    the worker loop, and the others are answered."""
    from app.worker.batching import DynamicBatcher
    from app.worker.loop import Worker
    from app.worker.protocol import BatchDone, Failed, Infer
    from tests.pool.test_worker_failures import Outbox

    outbox = Outbox()
    worker = Worker(outbox, DynamicBatcher(8, 0.0))  # type: ignore[arg-type]
    worker.denoisers["tiny"] = DenoisingEngine(generator, max_images=8)
    good = {"seed": 1, "label": 2, "truncation": 1.0, "steps": 2}
    worker.handle(Infer(1, "tiny", {**good, "steps": 5000}, 1))  # past the model's T
    worker.handle(Infer(2, "tiny", good, 1))
    while worker.denoisers["tiny"].has_work():
        worker.denoise_step("tiny", worker.denoisers["tiny"])
    failed = [m for m in outbox.sent if isinstance(m, Failed)]
    assert [f.request_id for m in failed for f in m.failures] == [1]
    assert "steps" in failed[0].failures[0].reason
    done = [m for m in outbox.sent if isinstance(m, BatchDone)]
    assert [request_id for m in done for request_id, _ in m.results] == [2]
