"""Peer: the hand-written baseline for text: a plain FastAPI app that streams
/v1/completions from a greedy loop over genserve's GPT module with its KV cache, in the
event loop, one request at a time. No engine, no worker process, no batching: the floor of
what serving one stream costs, and the code a user would write first.

    bench/peers/.venvs/fastapi/bin/python bench/peers/kvloop_app.py --port 8105

The loop calls the module's documented `forward_cached` (prefill, then one token a step);
genserve's engine calls its own decode step, and the difference between the two is part of
what the comparison measures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from models.artifacts import load_artifact  # noqa: E402

torch.set_num_threads(int(os.environ.get("PEER_TORCH_THREADS", "1")))
NAME = "shakespeare-gpt"
LM = load_artifact(REPO / "models" / "pretrained" / NAME)  # a GPTLanguageModel
MODEL, TOKENIZER = LM.model, LM.tokenizer
CACHE = MODEL.new_cache(1)
app = FastAPI()


class Body(BaseModel):
    model: str = NAME
    prompt: str
    max_tokens: int = 16
    stream: bool = False


def generate(prompt: str, max_tokens: int) -> Iterator[int]:
    """Greedy tokens of `prompt`'s continuation, one KV-cache step each."""
    ids = TOKENIZER.encode(prompt)[-MODEL.config.block_size :]
    slot = torch.tensor([0])
    logits = MODEL.forward_cached(torch.tensor([ids]), CACHE, slot, torch.tensor([0]), 0)
    position = len(ids)
    for _ in range(max_tokens):
        token = int(logits[0].argmax())
        yield token
        if position >= MODEL.config.block_size:
            break
        idx = torch.tensor([[token]])
        logits = MODEL.forward_cached(idx, CACHE, slot, torch.tensor([position]), 0)
        position += 1


def chunk(text: str, finish: str | None, created: int) -> str:
    body = {
        "id": "cmpl-kvloop",
        "object": "text_completion",
        "created": created,
        "model": NAME,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@app.post("/v1/completions", response_model=None)
async def completions(body: Body) -> Any:
    created = int(time.time())
    prompt_tokens = len(TOKENIZER.encode(body.prompt))
    if not body.stream:
        tokens = list(generate(body.prompt, body.max_tokens))
        text = TOKENIZER.decode(tokens)
        return {
            "id": "cmpl-kvloop",
            "object": "text_completion",
            "created": created,
            "model": NAME,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
            },
        }

    async def events() -> AsyncIterator[str]:
        n = 0
        for token in generate(body.prompt, body.max_tokens):
            n += 1
            finish = "length" if n == body.max_tokens else None
            yield chunk(TOKENIZER.decode([token]), finish, created)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                 "total_tokens": prompt_tokens + n}  # fmt: skip
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/v1/models")
async def models() -> dict:
    return {"object": "list", "data": [{"id": NAME, "object": "model"}]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8105)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
