"""lm-evaluation-harness, unchanged, evaluates genserve's models over /v1/completions.

`lm_eval --model local-completions` scores each (context, continuation) by sending the token
ids of context + continuation with `echo: true, max_tokens: 1, logprobs: 1`, then summing
`token_logprobs[ctxlen:-1]` (ctxlen: the context's token count under its own, client-side
tokenizer; the last entry is the generated token). Its loglikelihoods must be genserve's own,
so each is checked against `POST /score` on the same text. The task reads a jsonl in
tests/e2e/lm_eval_task/ and the tokenizer is exported from the artifact: nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.text.hf_export import export_artifact_tokenizer
from tests.e2e.server import Server
from tests.e2e.text_server import (
    API_KEY,
    AUTH,
    BPE_MODEL,
    CHAR_MODEL,
    artifact_dir,
    artifact_tokenizer,
    start_text_server,
)

pytestmark = pytest.mark.e2e
TASK_DIR = Path(__file__).parent / "lm_eval_task"
TASK = "genserve_shakespeare"
TOLERANCE = 1e-4  # nats, per continuation


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_text_server(tmp_path_factory.mktemp("e2e-lm-eval"))
    yield srv
    srv.stop()


def run_lm_eval(server: Server, model: str, tmp: Path, batch_size: int) -> list[dict]:
    """Runs the lm_eval CLI against `server`; returns its logged samples, one per document."""
    tokenizer_dir = export_artifact_tokenizer(artifact_dir(server, model), tmp / "tokenizer")
    _, block_size = artifact_tokenizer(server, model)
    model_args = ",".join(
        [
            f"base_url={server.url}/v1/completions",
            f"model={model}",
            f"tokenizer={tokenizer_dir}",
            "tokenizer_backend=huggingface",
            f"max_length={block_size}",
            "max_retries=1",  # a refused request is a failure to see, not to retry
        ]
    )
    out = tmp / "results"
    command = [
        *(sys.executable, "-m", "lm_eval", "--model", "local-completions"),
        *("--model_args", model_args, "--tasks", TASK, "--include_path", str(TASK_DIR)),
        *("--batch_size", str(batch_size), "--log_samples", "--output_path", str(out)),
    ]
    env = {
        **os.environ,
        "OPENAI_API_KEY": API_KEY,  # local-completions sends it as a Bearer token
        "HF_HOME": str(tmp / "hf"),  # datasets' cache: fresh, never the user's
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # run in the task folder: its YAML names the jsonl relative to the working directory
    done = subprocess.run(
        command, cwd=TASK_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    log = f"{done.stdout}\n{done.stderr[-6000:]}\nserver:\n{server.output()[-3000:]}"
    assert done.returncode == 0, log
    files = list(out.rglob(f"samples_{TASK}_*.jsonl"))
    assert len(files) == 1, log
    samples = [json.loads(line) for line in files[0].read_text().splitlines()]
    data = (TASK_DIR / "shakespeare_mc.jsonl").read_text().splitlines()
    assert len(samples) == len(data), log
    return samples


def score(server: Server, model: str, text: str) -> list[dict]:
    """The tokens of `text` with their logprobs, from genserve's native endpoint."""
    response = server.client.post("/score", json={"model": model, "text": text}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["tokens"]


@pytest.mark.parametrize(
    ("model", "batch_size"),
    [(CHAR_MODEL, 1), (BPE_MODEL, 4)],  # batches: several prompts in one request
)
def test_lm_eval_loglikelihoods_are_genserves_scores(
    server: Server, tmp_path: Path, model: str, batch_size: int
) -> None:
    samples = run_lm_eval(server, model, tmp_path, batch_size)
    tokenizer, _ = artifact_tokenizer(server, model)
    for sample in samples:
        lls = [float(resp[0]) for resp in sample["filtered_resps"]]  # logged as strings
        for i, ll in enumerate(lls):
            context = sample["arguments"][f"gen_args_{i}"]["arg_0"]
            continuation = sample["arguments"][f"gen_args_{i}"]["arg_1"]
            tokens = score(server, model, context + continuation)
            ids = tokenizer.encode(context + continuation)
            assert [t["id"] for t in tokens] == ids  # the server tokenizes as the artifact says
            ctxlen = len(tokenizer.encode(context))  # as lm-eval splits: by the context's count
            expected = sum(t["logprob"] for t in tokens[ctxlen:])
            assert ll == pytest.approx(expected, abs=TOLERANCE), (context, continuation)
    if model == CHAR_MODEL:  # trained on these very lines: it knows most of the missing words
        accuracy = sum(sample["acc"] for sample in samples) / len(samples)  # lm-eval's verdict
        assert accuracy >= 0.75, accuracy
