"""Schemathesis against the live /openapi.json of a real server, every operation, positive
and negative examples: no 500, every answer documented, every error in the one shape.

Bounded: `FUZZ_EXAMPLES` per operation and mode (GENSERVE_FUZZ_EXAMPLES overrides it), and
derandomized so that a run repeats (GENSERVE_FUZZ_SEED=<int> explores other examples). The
shared server runs no job runner (POST /train only queues) and has small generation limits,
so no example starts long work. Positive examples are mostly steered to things that exist
(served models, datasets, kinds, prompts in the vocabulary, real PNGs): random names only
ever reach the 404 branch.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import Server
from tests.helpers import held_out_digits, held_out_mnist
from tests.reliability.conftest import LIMITS

pytestmark = pytest.mark.e2e
FUZZ_EXAMPLES = int(os.environ.get("GENSERVE_FUZZ_EXAMPLES", "50"))
FUZZ_SEED = os.environ.get("GENSERVE_FUZZ_SEED")
MAX_NEW_TOKENS = int(LIMITS["GENSERVE_MAX_NEW_TOKENS"])
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def check_error_shape(response: requests.Response) -> None:
    """DESIGN.md: every 4xx/5xx is {"error": {"code", "message", "details"}}; under /v1 also
    OpenAI's `type` and `param`."""
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    fields = {"code", "message", "details"}
    if response.request.path_url.startswith("/v1/"):
        fields |= {"type", "param"}
    assert set(body["error"]) == fields, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if response.status_code in (429, 503):
        assert response.headers.get("retry-after"), response.headers


class Steer:
    """Rewrites most positive examples to use what the server really has."""

    def __init__(self, srv: Server) -> None:
        self.models = [m["name"] for m in srv.client.get("/models").json()["data"]]
        datasets = srv.client.get("/datasets").json()["data"]
        self.datasets: list[int | str] = [d["id"] for d in datasets] + [d["name"] for d in datasets]
        self.kinds = [k["kind"] for k in srv.client.get("/train/kinds").json()["data"]]
        self.vocab = "".join(sorted(set("ROMEO: JULIET, to be or not to be.\n")))
        self.png = held_out_digits(1)[0][0]
        self.mnist_png = held_out_mnist(1)[0][0]  # the VAEs' size, for /images/*

    def __call__(self, case: schemathesis.Case, data: st.DataObject) -> None:
        if not data.draw(st.integers(0, 3), label="steer"):
            return  # a quarter stay as generated
        path_values: dict[str, st.SearchStrategy[Any]] = {
            "name": st.sampled_from(self.models),
            "version": st.integers(1, 3),
            "dataset_id": st.integers(1, 8),
            "job_id": st.integers(1, 8),
        }
        for key in case.path_parameters or {}:
            if key in path_values:
                case.path_parameters[key] = data.draw(path_values[key], label=key)
        body = case.body
        if not isinstance(body, dict):
            return
        fields: dict[str, st.SearchStrategy[Any]] = {
            "model": st.sampled_from([None, *self.models]),
            "prompt": st.text(self.vocab, max_size=300),
            "images": st.lists(st.just(self.png), min_size=1, max_size=20),
            "kind": st.sampled_from(self.kinds),
            "dataset": st.sampled_from(self.datasets),
            "params": st.just({}),
            "max_new_tokens": st.integers(1, MAX_NEW_TOKENS),
            "max_tokens": st.integers(1, MAX_NEW_TOKENS),
            "n": st.integers(1, 4),
        }
        if case.operation.path == "/classify":  # exactly one of texts or images
            keep, drop = data.draw(st.permutations(["inputs", "images"]), label="input")
            body.pop(drop, None)
            body[keep] = body.get(keep) or ["to be or not to be"]
        if case.operation.path.startswith("/images/"):  # a VAE's: 28x28 digits
            fields["images"] = st.lists(st.just(self.mnist_png), min_size=1, max_size=4)
        if case.operation.path == "/images/interpolate":  # two images or two seeds
            keep, drop = data.draw(st.permutations(["images", "seeds"]), label="ends")
            body.pop(drop, None)
            body[keep] = [self.mnist_png] * 2 if keep == "images" else body.get("seeds") or [1, 2]
            fields["images"] = st.just([self.mnist_png] * 2)
            fields["steps"] = st.integers(2, int(LIMITS["GENSERVE_MAX_IMAGES"]))
            body.setdefault("steps", 2)  # the default, 8, is above this server's limit
        limits = {"/generate/text": "max_new_tokens", "/v1/completions": "max_tokens"}
        for key, strategy in fields.items():
            if key in body or key == limits.get(case.operation.path):
                body[key] = data.draw(strategy, label=key)
                if body[key] is None:
                    del body[key]


def fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    url: str,
    steer: Steer,
    failures: list[str],
) -> Counter[int]:
    """Runs the examples of one operation in one mode; returns the statuses it got."""
    statuses: Counter[int] = Counter()
    session = requests.Session()
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])

    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=FUZZ_SEED is None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are listed as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        if mode == GenerationMode.POSITIVE:
            steer(case, data)
        response = case.call(base_url=url, session=session, timeout=30)
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
            check_error_shape(response)
        except (Exception, BaseExceptionGroup) as exc:  # go on: the report lists them all
            failures.append(
                f"{operation.label} [{mode.value}] -> {response.status_code} "
                f"{response.text[:300]!r}\n  sent: {case.as_curl_command()}\n  {exc}"[:2000]
            )

    if FUZZ_SEED is not None:
        run = hypothesis.seed(int(FUZZ_SEED))(run)
    # Negative mode of an operation without inputs: nothing can be made invalid.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()
    return statuses


def test_every_documented_error_has_the_one_error_shape(server: Server) -> None:
    """Clients generated from the schema must expect `{"error": ...}`, not FastAPI's `detail`."""
    spec = server.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":  # 503 says what loads
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status, ref)


def test_every_operation_keeps_its_contract(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19, [op.label for op in operations]
    steer = Steer(server)
    failures: list[str] = []
    counts: dict[str, Counter[int]] = {}
    log_start = len(server.output())
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} [{mode.value}]"
            counts[label] = fuzz(operation, mode, server.url, steer, failures)
    total = sum(c.total() for c in counts.values())
    print(f"\nfuzzed {len(operations)} operations: {total} examples in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    for label, statuses in counts.items():
        print(f"  {statuses.total():4d}  {label}  {dict(sorted(statuses.items()))}")
    assert server.client.get("/healthz").status_code == 200
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures[:40])
    log = server.output()[log_start:]
    assert "Traceback" not in log, log[-5000:]
