"""The two model hot paths alone, without HTTP or processes: what a worker can do at best.

    python bench/hot_paths.py [--threads 1]

1. continuous batching: tokens/s of the GenerationEngine on the committed shakespeare-gpt,
   1 and 16 sequences of 128 tokens started together (the 16/1 ratio the model allows);
2. the sentiment classifier: milliseconds per sentence at batch 1 and 8 over 400 test
   sentences, as the worker calls it;
3. the GPT's decoding step against its general cached forward pass (what the engine called
   before the step was written with functional ops), interleaved, at batch 1, 4, 16 and 64.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.worker.continuous_batching import GenerationEngine
from bench.common import DATA_DIR, REPO, machine
from models.artifacts import load_artifact
from models.data.builtin import load_sentiment


def engine_rate(engine_lm: object, sequences: int, tokens: int = 128) -> float:
    engine = GenerationEngine(engine_lm, 64)  # type: ignore[arg-type]
    for i in range(sequences):
        engine.add(i, "ROMEO:", {"max_new_tokens": tokens, "seed": i}, 1)
    started, produced = time.perf_counter(), 0
    while engine.has_work():
        produced += len(engine.step())
    return produced / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")

    lm = load_artifact(REPO / "models" / "pretrained" / "shakespeare-gpt")
    engine_rate(lm, 1, 16)  # warm-up
    rates = {n: max(engine_rate(lm, n) for _ in range(2)) for n in (1, 16)}
    print(
        f"engine, shakespeare-gpt: 1 sequence {rates[1]:.0f} tok/s, "
        f"16 sequences {rates[16]:.0f} tok/s, ratio {rates[16] / rates[1]:.1f}x"
    )

    clf = load_artifact(REPO / "models" / "pretrained" / "sentiment")
    _, _, texts, _ = load_sentiment(DATA_DIR)
    texts = texts[:400]
    for batch in (1, 8):
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            clf.predict_proba(texts[i : i + batch])
        ms = (time.perf_counter() - started) * 1000 / len(texts)
        print(f"sentiment predict_proba, batch {batch}: {ms:.3f} ms per sentence")

    model = lm.model
    cache = model.new_cache(64)
    for batch in (1, 4, 16, 64):
        for s in range(batch):  # prompts of 30..30+3*batch tokens
            prompt = torch.tensor([[1, 2, 3] * (10 + s)])
            model.forward_cached(prompt, cache, torch.tensor([s]), torch.tensor([0]), s)
        positions = [3 * (10 + s) for s in range(batch)]
        tokens = torch.arange(batch) % 60

        slots, start = torch.arange(batch), torch.tensor(positions)
        paths = {
            "decode_step": partial(model.decode_step, tokens, cache, 0, positions),
            "forward_cached": partial(
                model.forward_cached, tokens[:, None], cache, slots, start, first=0
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(5):  # A B A B: the machine's drift hits both
            for name, f in paths.items():
                started = time.perf_counter()
                for _ in range(30):
                    f()
                times[name].append((time.perf_counter() - started) / 30 * 1000)
        a, b = (sorted(v)[2] for v in times.values())
        print(f"GPT step, batch {batch}: decode_step {a:.2f} ms, forward_cached {b:.2f} ms")


if __name__ == "__main__":
    main()
