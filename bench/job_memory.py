"""Peak training memory per kind at two sizes: the estimate POST /train admits jobs by
(`footprint` on each params dataclass in models/kinds.py) against a measured run.

    python bench/job_memory.py [--threads 2] [--only text-gpt,image-gan]

Each run is a fresh process that does what a job runner does, on the CPU: load the built-in
data set's split, train (language models: a few steps with an evaluation and a checkpoint;
the others: one epoch, which checkpoints), run the final evaluation, write the artifact.
Before it, the process imports torch and trains the same kind once on tiny data, so code
pages, thread pools and allocator arenas are in place; then the kernel's peak-RSS counter is
reset (/proc/self/clear_refs). Measured = peak RSS (VmHWM) during the job minus RSS before
it. The estimate should be at or above it, within a small factor. A GPU would be measured
with torch.cuda.max_memory_allocated; none here.

`--save runs.jsonl` keeps each measurement; `--table runs.jsonl` prints them again with the
estimates of the code as it is now (an estimate is arithmetic on the params and the data
set's metadata, so formulas can be revised without measuring again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import DATA_DIR, machine

LM_RUN = {"max_steps": 4, "eval_every": 2, "eval_batches": 1}
# kind -> (data set, [(size label, params)]); the first size is the kind's defaults
RUNS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "text-gpt": (
        "tinyshakespeare",
        [
            ("default (4x128, B16 T128)", {**LM_RUN}),
            (
                "6x384, B32 T256",
                {
                    **LM_RUN,
                    "n_layer": 6,
                    "n_head": 6,
                    "n_embd": 384,
                    "block_size": 256,
                    "batch_size": 32,
                },
            ),
        ],
    ),
    "text-lstm": (
        "tinyshakespeare",
        [
            ("default (2x256, B8 T64)", {**LM_RUN}),
            (
                "3x1024, B32 T128",
                {**LM_RUN, "hidden": 1024, "n_layer": 3, "batch_size": 32, "block_size": 128},
            ),
        ],
    ),
    "text-gru": (
        "tinyshakespeare",
        [
            ("default (2x256, B8 T64)", {**LM_RUN}),
            (
                "3x1024, B32 T128",
                {**LM_RUN, "hidden": 1024, "n_layer": 3, "batch_size": 32, "block_size": 128},
            ),
        ],
    ),
    "image-vae": (
        "mnist",
        [
            ("default (hidden 256, B64)", {"epochs": 1}),
            (
                "hidden 2048, z 64, B256",
                {"epochs": 1, "hidden": 2048, "latent_dim": 64, "batch_size": 256},
            ),
        ],
    ),
    "image-gan": (
        "mnist",
        [
            ("default (C32, B64)", {"epochs": 1}),
            ("C128, B256, EMA", {"epochs": 1, "channels": 128, "batch_size": 256, "ema": 0.999}),
        ],
    ),
    "image-diffusion": (
        "digits",
        [
            ("default (C16, B64), 8x8 digits", {"epochs": 1}),
            (
                "C64, 2 blocks, B256, 8x8 digits",
                {"epochs": 1, "channels": 64, "blocks": 2, "batch_size": 256},
            ),
        ],
    ),
    "classify-rnn": (
        "sentiment",
        [
            ("default (word, 128x128, B32)", {"epochs": 1}),
            (
                "char, 256x512 x2, B128",
                {
                    "epochs": 1,
                    "level": "char",
                    "embed": 256,
                    "hidden": 512,
                    "num_layers": 2,
                    "batch_size": 128,
                },
            ),
        ],
    ),
    "classify-cnn": (
        "digits",
        [
            ("default (8x8 digits, B64)", {"epochs": 1}),
            ("MNIST 28x28, fc 1024, B256", {"epochs": 1, "hidden": 1024, "batch_size": 256}),
        ],
    ),
    "classify-mlp": (
        "sentiment",
        [
            ("default (64 hidden)", {"max_iter": 5}),
            ("1024 hidden", {"max_iter": 5, "hidden": 1024}),
        ],
    ),
    "text-ngram": (
        "tinyshakespeare",
        # order 10: the highest whose base-65 codes fit int64 (models/text/ngram.py)
        [("order 7 (default)", {}), ("order 10", {"order": 10})],
    ),
}
DATASET_OF_SIZE = {("classify-cnn", 1): "mnist"}  # the larger CNN trains on 28x28 images

# tiny versions of each kind for the warm-up run
WARM: dict[str, dict[str, Any]] = {
    "text-gpt": {
        "max_steps": 2,
        "eval_every": 1,
        "eval_batches": 1,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 16,
        "block_size": 16,
        "batch_size": 4,
    },
    "text-lstm": {
        "max_steps": 2,
        "eval_every": 1,
        "eval_batches": 1,
        "hidden": 16,
        "n_embd": 8,
        "block_size": 16,
    },
    "image-vae": {"epochs": 1, "hidden": 16, "latent_dim": 4},
    "image-gan": {"epochs": 1, "channels": 8, "latent_dim": 4, "batch_size": 16, "ema": 0.9},
    "image-diffusion": {"epochs": 1, "channels": 8, "batch_size": 16},
    "classify-rnn": {"epochs": 1, "embed": 8, "hidden": 8},
    "classify-cnn": {"epochs": 1, "hidden": 16},
    "classify-mlp": {"min_df": 1, "max_iter": 2},
    "text-ngram": {"order": 3},
}
WARM["text-gru"] = WARM["text-lstm"]


def status(field: str) -> int:
    """A /proc/self/status size in bytes (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def tiny_data(kind: str) -> tuple[Any, Any]:
    import numpy as np

    from models.data import ImageSet, LabelledTexts, TextCorpus, split
    from models.kinds import KINDS

    data = KINDS[kind].data
    if data == "text":
        return split(TextCorpus("First Citizen:\nBefore we proceed, hear me speak.\n" * 40))
    if data == "labelled-text":
        texts = ["good fun great", "great good film", "bad dull awful", "awful bad film"] * 10
        labels = np.array([1, 1, 0, 0] * 10, dtype=np.int64)
        return split(LabelledTexts(texts, labels, ["bad", "good"]), 0.25, 0)
    images = np.random.default_rng(0).random((64, 8, 8), dtype=np.float32)
    return split(ImageSet(images, np.arange(64) % 4, ["a", "b", "c", "d"]), 0.25, 0)


def train_once(kind: str, train: Any, test: Any, params: dict[str, Any], work: Path) -> None:
    """What a runner does with a loaded split: train, checkpointing, then save the artifact."""
    import torch

    from models.artifacts import save_artifact
    from models.kinds import KINDS
    from models.training.hooks import TrainHooks

    spec = KINDS[kind]
    hooks = TrainHooks(should_stop=lambda: False, work_dir=work / "checkpoint")
    result = spec.trainer()(kind, train, test, spec.params(**params), hooks, torch.device("cpu"))
    save_artifact(
        work / "artifact",
        {**result.config, "name": "m"},
        module=result.module,
        estimator=result.estimator,
        card="# m\n",
    )


def one(kind: str, size: int, threads: int) -> dict[str, Any]:
    """The measurement, in this (fresh) process: what the estimate needs, and the peak."""
    import torch

    from models.data import describe
    from models.data.builtin import load_split

    torch.set_num_threads(threads)
    dataset = DATASET_OF_SIZE.get((kind, size), RUNS[kind][0])
    label, params = RUNS[kind][1][size]
    with tempfile.TemporaryDirectory() as tmp:
        train_once(kind, *tiny_data(kind), WARM[kind], Path(tmp) / "warm")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = status("VmRSS")
        began = time.perf_counter()
        train, test = load_split("builtin", None, dataset, DATA_DIR)
        train_once(kind, train, test, params, Path(tmp) / "job")
        seconds = time.perf_counter() - began
        measured = status("VmHWM") - before
    meta = describe(train)  # the data set's row, as DatasetService records a built-in
    records = meta.pop("num_records") + describe(test)["num_records"]
    return {
        "kind": kind,
        "size": label,
        "dataset": dataset,
        "job_params": params,
        "records": records,
        "meta": meta,
        "measured": measured,
        "seconds": round(seconds, 1),
    }


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def row(run: dict[str, Any]) -> str:
    """A table row: today's estimate for a measured run (estimates are pure arithmetic)."""
    from models.kinds import KINDS, DataShape

    spec = KINDS[run["kind"]]
    data = DataShape.from_meta(run["records"], run["meta"])
    estimate = spec.params(**run["job_params"]).footprint(data, run["kind"])
    ratio = estimate.bytes / max(run["measured"], 1)
    return (
        f"| {run['kind']} | {run['size']} | {run['dataset']} | {estimate.params:,} | "
        f"{mib(estimate.bytes)} | {mib(run['measured'])} | {ratio:.2f} | {run['seconds']} |"
    )


HEADER = (
    "| kind | size | data | params | estimate MiB | measured MiB | estimate / measured | s |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated kinds")
    parser.add_argument("--save", type=Path, help="append each run's measurement (JSON lines)")
    parser.add_argument("--table", type=Path, help="print the table of saved measurements")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.threads)))
        return
    if args.table:
        print(HEADER)
        for line in args.table.read_text().splitlines():
            print(row(json.loads(line)))
        return
    kinds = [k for k in RUNS if not args.only or k in args.only.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"# job memory: {machine()}, torch threads {args.threads}, CPU, fp32\n")
    print(HEADER)
    for kind in kinds:
        for size in range(len(RUNS[kind][1])):
            command = [sys.executable, __file__, "--one", kind, str(size)]
            out = subprocess.run(
                [*command, "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if out.returncode:
                print(f"| {kind} | {RUNS[kind][1][size][0]} | failed: {out.stderr[-300:]!r} |")
                continue
            line = out.stdout.strip().splitlines()[-1]
            if args.save:
                with args.save.open("a") as saved:
                    saved.write(line + "\n")
            print(row(json.loads(line)), flush=True)


if __name__ == "__main__":
    main()
