"""Peer: a plain FastAPI app that calls the sentiment model in-process, in the event loop, one
request at a time (no batching, no worker process): the simplest way to serve it.

    bench/peers/.venvs/fastapi/bin/python bench/peers/fastapi_app.py --port 8101
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _sentiment
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

MODEL = _sentiment.load()
app = FastAPI()


class Body(BaseModel):
    inputs: list[str] = Field(min_length=1)


@app.post("/classify")
async def classify(body: Body) -> dict:
    return {"model": "sentiment", "version": 1, "results": _sentiment.results(MODEL, body.inputs)}


@app.get("/readyz")
async def ready() -> dict:
    return {"status": "ready"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
