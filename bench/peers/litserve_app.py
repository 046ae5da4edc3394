"""Peer: LitServe serving genserve's sentiment artifact with its dynamic batching.

    bench/peers/.venvs/litserve/bin/python bench/peers/litserve_app.py --port 8103

One worker on the CPU (as genserve runs one CPU worker), max_batch_size=8 and
batch_timeout=PEER_BATCH_TIMEOUT seconds. POST /classify takes genserve's body,
{"inputs": [texts]}, and answers genserve's shape; a request's texts stay together through the
batch (batch() keeps the per-request lists, predict() runs one predict_proba over all of them).
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import _sentiment
import litserve as ls
from fastapi import HTTPException


class SentimentAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = _sentiment.load()

    # no annotations on decode_request/encode_response: LitServe reads them as the endpoint's
    # request and response types (unannotated: the raw request, parsed as JSON)
    def decode_request(self, request):
        try:
            return _sentiment.texts_of(request)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e

    def batch(self, inputs: list[list[str]]) -> list[list[str]]:
        return inputs  # each request's texts stay one item

    def predict(self, requests: list[list[str]]) -> list[list[dict]]:
        flat = [t for texts in requests for t in texts]
        results = _sentiment.results(self.model, flat)
        out, start = [], 0
        for texts in requests:
            out.append(results[start : start + len(texts)])
            start += len(texts)
        return out

    def unbatch(self, output: list[list[dict]]) -> list[list[dict]]:
        return output

    def encode_response(self, output):
        return {"model": "sentiment", "version": 1, "results": output}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8103)
    args = parser.parse_args()
    api = SentimentAPI(
        max_batch_size=_sentiment.MAX_BATCH_SIZE,
        batch_timeout=_sentiment.BATCH_TIMEOUT,
        api_path="/classify",
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
