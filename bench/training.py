"""Training throughput: a /train job against a plain PyTorch loop, same model, data, device.

    python bench/training.py [--steps 300] [--threads 1] [--rounds 2]

The plain loop is what a person writes by hand (nanoGPT's inner loop): random windows of
tinyshakespeare, forward, backward, gradient clipping, AdamW step, nothing else. The job
goes through the whole service: POST /train, the runner process claims it, trains with the
shared loop (learning rate schedule, gradient clipping, periodic evaluation and
checkpoints, progress to the database every heartbeat). Its samples/s is steps x batch /
the loop's wall time as the job reports it, evaluations and checkpoints included; data
loading and the final full-validation pass are not training and count for neither. Rounds
alternate the two; the best of each is compared. Target (DESIGN.md): job >= 0.95 x plain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import DATA_DIR, GENSERVE, REPO, machine, start, stop

MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
BATCH = 16


def plain_loop(steps: int, threads: int) -> float:
    """Samples/s of a bare loop over the same GPT, data and batch shape."""
    from models.data.builtin import load_shakespeare
    from models.text.gpt import GPT, GPTConfig
    from models.text.tokenizer import CharTokenizer

    torch.set_num_threads(threads)
    train, val = load_shakespeare(DATA_DIR)
    tok = CharTokenizer.from_text(train + val)
    data = torch.tensor(tok.encode(train), dtype=torch.long)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **MODEL)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    block = MODEL["block_size"]
    offsets = torch.arange(block + 1)
    started = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - block - 1, (BATCH,))
        windows = data[ix[:, None] + offsets]  # (B, T+1)
        _, loss = model(windows[:, :-1], windows[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps * BATCH / (time.perf_counter() - started)


def job_rate(url: str, steps: int, round_: int) -> tuple[float, dict]:
    params = {
        **MODEL,
        "batch_size": BATCH,
        "max_steps": steps,
        "eval_every": max(1, steps // 3),  # three evaluations + checkpoints, as a user would
        "eval_batches": 5,
    }
    body = {
        "kind": "text-gpt",
        "dataset": "tinyshakespeare",
        "name": f"bench-{round_}",
        "params": params,
    }
    job = httpx.post(url + "/train", json=body, timeout=30).raise_for_status().json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = httpx.get(f"{url}/train/{job['id']}", timeout=30).json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
    return job["metrics"]["samples_per_s"], job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pretrained = Path(tmp) / "pretrained"
        pretrained.mkdir()
        (pretrained / "sentiment").symlink_to(REPO / "models" / "pretrained" / "sentiment")
        env = {
            "GENSERVE_STATE_DIR": tmp,
            "GENSERVE_PRETRAINED_DIR": str(pretrained),
            "GENSERVE_DATA_DIR": str(DATA_DIR),
            "GENSERVE_RUNNER_THREADS": str(args.threads),
            "GENSERVE_THREADS_PER_WORKER": "1",
            "GENSERVE_RUNNER_DEVICE": "cpu",
            "OMP_NUM_THREADS": str(args.threads),
        }
        env.pop("GENSERVE_DATABASE_URL", None)
        os.environ.pop("GENSERVE_DATABASE_URL", None)
        proc, url, _ = start(GENSERVE, env)
        try:
            plain, served = [], []
            for r in range(args.rounds):
                plain.append(plain_loop(args.steps, args.threads))
                rate, job = job_rate(url, args.steps, r)
                served.append(rate)
                print(
                    f"round {r + 1}: plain {plain[-1]:8.1f} samples/s   /train job "
                    f"{rate:8.1f} samples/s   (job {job['id']}, val_loss "
                    f"{job['metrics']['val_loss']})",
                    flush=True,
                )
        finally:
            stop(proc)

    best_plain, best_job = max(plain), max(served)
    print()
    print(f"machine: {machine()}, torch {torch.__version__}, {args.threads} thread(s), cpu")
    print(f"model: text-gpt {MODEL}, batch {BATCH}, {args.steps} steps")
    print(f"plain PyTorch loop: {best_plain:.1f} samples/s (best of {args.rounds})")
    print(f"/train job:         {best_job:.1f} samples/s (best of {args.rounds})")
    ratio = best_job / best_plain
    verdict = "met" if ratio >= 0.95 else "NOT met"
    print(f"ratio job / plain:  {ratio:.3f}  (target >= 0.95: {verdict})")


if __name__ == "__main__":
    main()
