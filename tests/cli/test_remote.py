"""`genserve train`, `jobs` and `datasets` as HTTP clients, against a fake server in a thread.

The fake implements the routes and shapes of the real API with canned jobs, served by uvicorn on
a free port, so the client, its error handling and the CLI's output are tested over real HTTP.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import typer
import uvicorn
from fastapi import Depends, FastAPI, File, Form, Header, Response, UploadFile
from typer.testing import CliRunner

from app.cli import cli, follow
from app.cli.remote import default_url, parse_params, rollback_target
from app.cli.render import field_errors
from app.client import ClientError, GenserveClient, _error_from
from app.errors import InvalidInput, NotFound, Unauthorized, Unavailable, install_error_handlers

API_KEY = "test-key-0123"
KINDS = [
    {
        "kind": "text-gpt",
        "task": "text-generation",
        "dataset_kinds": ["text"],
        "description": "A small character-level GPT.",
        "params": [
            {"name": "max_steps", "type": "int", "default": 1000, "minimum": 1, "maximum": 10**6},
            {"name": "lr", "type": "float", "default": 0.001, "minimum": 0, "maximum": 1},
            {"name": "mode", "type": "str", "default": "fast", "enum": ["fast", "slow"]},
        ],
    }
]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeServer:
    """Canned jobs: each GET /train/{id} moves a job one step (running, then its end)."""

    def __init__(self) -> None:
        self.url = ""
        self.reset()
        self.app = self._build()

    def reset(self) -> None:
        self.jobs: dict[int, dict[str, Any]] = {}
        self.polls: dict[int, int] = {}
        self.datasets: dict[int, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.model_polls = 0

    def _build(self) -> FastAPI:
        api = FastAPI()
        install_error_handlers(api)

        def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
            if authorization != f"Bearer {API_KEY}":
                raise Unauthorized("missing or invalid API key")

        guarded = [Depends(authorized)]

        @api.post("/train", status_code=202, dependencies=guarded)
        def create_job(body: dict[str, Any], response: Response) -> dict[str, Any]:
            self.requests.append(body)
            if body["kind"] not in {k["kind"] for k in KINDS}:
                raise InvalidInput(f"unknown kind {body['kind']!r}; known: text-gpt")
            job_id = len(self.jobs) + 1
            self.jobs[job_id] = {
                "id": job_id,
                "kind": body["kind"],
                "name": body["name"],
                "dataset_id": body["dataset"] if isinstance(body["dataset"], int) else 1,
                "params": body.get("params", {}),
                "activate": body.get("activate", False),
                "status": "queued",
                "progress": 0.0,
                "metrics": {},
                "error": None,
                "attempts": 0,
                "cancel_requested": False,
                "created_at": _now(),
                "started_at": None,
                "finished_at": None,
                "model_version": None,
                "history": [],
            }
            self.polls[job_id] = 0
            response.headers["Location"] = f"/train/{job_id}"
            return self._public(self.jobs[job_id])

        @api.get("/train", dependencies=guarded)
        def list_jobs(
            status: str | None = None,
            kind: str | None = None,
            name: str | None = None,
            limit: int = 20,
            offset: int = 0,
        ) -> dict[str, Any]:
            jobs = [
                self._public(j)
                for j in reversed(self.jobs.values())
                if (status is None or j["status"] == status)
                and (kind is None or j["kind"] == kind)
                and (name is None or j["name"] == name)
            ]
            return {"data": jobs[offset : offset + limit], "count": len(jobs)}

        @api.get("/train/kinds", dependencies=guarded)
        def list_kinds() -> dict[str, Any]:
            return {"data": KINDS}

        @api.get("/train/{job_id}", dependencies=guarded)
        def read_job(job_id: int) -> dict[str, Any]:
            job = self._job(job_id)
            self.polls[job_id] += 1
            if job["name"] == "flaky" and self.polls[job_id] == 1:
                raise Unavailable("restarting")
            if job["status"] == "queued":
                job.update(status="running", progress=0.5, started_at=_now(), attempts=1)
                job["metrics"] = {"loss": 2.0, "step": 100, "samples_per_s": 1234.5}
            elif job["status"] == "running":
                job.update(finished_at=_now())
                if job["name"] == "diverges":
                    job.update(status="failed", error="loss became NaN at step 150")
                else:
                    job.update(status="succeeded", progress=1.0)
                    job["metrics"] = {"loss": 1.25, "val_loss": 1.5, "step": 200}
                    job["model_version"] = {"name": job["name"], "version": 2}
            if job["metrics"]:
                step = job["metrics"]["step"]
                job["history"].append(
                    {"step": step, "values": job["metrics"], "created_at": _now()}
                )
            return job

        @api.get("/models/{name}", dependencies=guarded)
        def read_model(name: str) -> dict[str, Any]:
            """v2 is desired at once; this replica serves it from the third poll on."""
            self.model_polls += 1
            served = 2 if self.model_polls >= 3 else 1
            degraded = {"served_version": 1, "error": "artifact missing"} if served == 1 else None
            return {"name": name, "active_version": 2, "served_version": served,
                    "replica": "r1", "degraded": degraded}  # fmt: skip

        @api.post("/train/{job_id}/cancel", dependencies=guarded)
        def cancel_job(job_id: int) -> dict[str, Any]:
            job = self._job(job_id)
            job.update(status="cancelled", cancel_requested=True, finished_at=_now())
            return self._public(job)

        @api.post("/datasets", status_code=201, dependencies=guarded)
        async def upload_dataset(
            response: Response,
            file: Annotated[UploadFile, File()],
            name: Annotated[str | None, Form()] = None,
        ) -> dict[str, Any]:
            content = await file.read()
            sha = hashlib.sha256(content).hexdigest()
            for ds in self.datasets.values():
                if ds["sha256"] == sha:
                    response.status_code = 200
                    return ds
            ds_id = len(self.datasets) + 100
            self.datasets[ds_id] = {
                "id": ds_id,
                "name": name or Path(file.filename or "data").stem,
                "kind": "text",
                "format": "txt",
                "sha256": sha,
                "size_bytes": len(content),
                "num_records": content.count(b"\n"),
                "meta": {"chars": len(content)},
                "builtin": False,
                "created_at": _now(),
            }
            return self.datasets[ds_id]

        @api.get("/datasets", dependencies=guarded)
        def list_datasets() -> dict[str, Any]:
            return {"data": list(self.datasets.values()), "count": len(self.datasets)}

        @api.get("/datasets/{dataset_id}", dependencies=guarded)
        def read_dataset(dataset_id: int) -> dict[str, Any]:
            if dataset_id not in self.datasets:
                raise NotFound(f"unknown dataset {dataset_id}")
            return self.datasets[dataset_id]

        return api

    def _job(self, job_id: int) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise NotFound(f"unknown training job {job_id}")
        return self.jobs[job_id]

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k != "history"}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    fake = FakeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.01)
    yield fake
    server.should_exit = True
    thread.join(5)
    sock.close()


@pytest.fixture
def server(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake_server.reset()
    monkeypatch.setattr(follow, "POLL_INTERVAL_S", 0.01)
    return fake_server


def invoke(server: FakeServer, *args: str, api_key: str | None = API_KEY) -> Any:
    env = {"GENSERVE_URL": server.url, "GENSERVE_API_KEY": api_key, "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env)


def test_params_are_json_when_they_parse_else_text() -> None:
    items = ["max_steps=200", "lr=0.001", "conditional=true", "text=hi there", "sizes=[1, 2]"]
    params = parse_params([*items, "eq=a=b", "nan=NaN", "empty="])
    assert params == {
        "max_steps": 200,
        "lr": 0.001,
        "conditional": True,
        "text": "hi there",
        "sizes": [1, 2],
        "eq": "a=b",
        "nan": "NaN",
        "empty": "",
    }
    with pytest.raises(typer.BadParameter):
        parse_params(["no_equals_sign"])


def test_train_sends_typed_params_and_the_api_key(server: FakeServer) -> None:
    result = invoke(
        server,
        *("train", "text-gpt", "--dataset", "3", "--name", "my-gpt", "--activate"),
        *("--param", "max_steps=200", "--param", "lr=0.001", "-p", "conditional=true"),
    )
    assert result.exit_code == 0, result.output
    assert "job 1 queued" in result.output
    assert "genserve jobs show 1" in result.output
    assert server.requests == [
        {
            "kind": "text-gpt",
            "dataset": 3,
            "name": "my-gpt",
            "params": {"max_steps": 200, "lr": 0.001, "conditional": True},
            "activate": True,
        }
    ]
    result = invoke(server, "train", "text-gpt", "-d", "shakespeare", "-n", "g")
    assert result.exit_code == 0, result.output
    assert server.requests[-1]["dataset"] == "shakespeare"


def test_a_malformed_param_is_a_usage_error(server: FakeServer) -> None:
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "g", "-p", "oops")
    assert result.exit_code == 2
    assert "key=value" in result.output
    assert server.requests == []


def test_follow_ends_at_succeeded_with_exit_0(server: FakeServer) -> None:
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "my-gpt", "--follow")
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert "job 1 succeeded" in last
    assert "loss=1.25 val_loss=1.5 step=200" in last
    assert "model my-gpt v2" in last


def test_follow_with_activate_returns_only_once_the_version_is_served(
    server: FakeServer,
) -> None:
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "g", "--activate", "--follow")
    assert result.exit_code == 0, result.output
    assert server.model_polls == 3
    assert "r1 still serves v1: artifact missing" in result.output
    assert result.output.strip().splitlines()[-1] == "g v2 is served by r1"


def test_follow_ends_at_failed_with_exit_1_and_the_error(server: FakeServer) -> None:
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "diverges", "--follow")
    assert result.exit_code == 1, result.output
    assert "job 1 failed" in result.output
    assert "loss became NaN at step 150" in result.output


def test_follow_waits_out_a_server_that_is_briefly_unavailable(server: FakeServer) -> None:
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "flaky", "--follow")
    assert result.exit_code == 0, result.output
    assert "job 1 succeeded" in result.output


def test_ctrl_c_stops_following_not_the_job(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: GenserveClient, job_id: int | str) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(GenserveClient, "get_job", interrupted)
    result = invoke(server, "train", "text-gpt", "-d", "1", "-n", "g", "--follow")
    assert result.exit_code == 130, result.output
    assert "genserve jobs cancel 1" in result.output
    assert server.jobs[1]["status"] == "queued"


def test_server_errors_print_their_message_and_exit_1(server: FakeServer) -> None:
    result = invoke(server, "train", "image-nope", "-d", "1", "-n", "g")
    assert result.exit_code == 1
    assert "error: unknown kind 'image-nope'; known: text-gpt" in result.output
    result = invoke(server, "jobs", "show", "42")
    assert result.exit_code == 1
    assert "unknown training job 42" in result.output
    result = invoke(server, "jobs", api_key=None)
    assert result.exit_code == 1
    assert "missing or invalid API key" in result.output


def test_an_unreachable_server_says_to_start_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for args in (["jobs"], ["train", "text-gpt", "-d", "1", "-n", "g"], ["datasets"], ["models"]):
        result = CliRunner().invoke(cli, [*args, "--url", url])
        assert result.exit_code == 1, result.output
        assert f"is `genserve serve` running at {url}?" in result.output


def test_jobs_lists_a_table_with_filters(server: FakeServer) -> None:
    with GenserveClient(server.url, API_KEY) as client:
        first = client.train("text-gpt", 1, "alpha")
        second = client.train("text-gpt", 1, "beta")
        client.get_job(second["id"])  # now running with a loss
    result = invoke(server, "jobs")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "text-gpt" in line]
    assert [row.split()[1] for row in rows] == [str(second["id"]), str(first["id"])]
    assert "running" in rows[0] and "50%" in rows[0] and "2" in rows[0]
    result = invoke(server, "jobs", "list", "--status", "queued")
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" not in result.output
    result = invoke(server, "jobs", "--limit", "1")
    assert "1 of 2 jobs" in result.output


def test_jobs_show_cancel_and_kinds(server: FakeServer) -> None:
    with GenserveClient(server.url, API_KEY) as client:
        job = client.train("text-gpt", 1, "alpha", {"max_steps": 200})
    result = invoke(server, "jobs", "show", str(job["id"]))
    assert result.exit_code == 0, result.output
    assert "running" in result.output and '{"max_steps": 200}' in result.output
    assert "metric history" in result.output and "1234" in result.output
    result = invoke(server, "jobs", "cancel", str(job["id"]))
    assert result.exit_code == 0, result.output
    assert f"job {job['id']} cancelled" in result.output
    result = invoke(server, "jobs", "kinds")
    assert result.exit_code == 0, result.output
    assert "text-gpt" in result.output and "A small character-level GPT." in result.output
    assert "max_steps" not in result.output  # the list is one line per kind
    result = invoke(server, "jobs", "kinds", "text-gpt")
    assert result.exit_code == 0, result.output
    assert "max_steps: int = 1000 [1..1000000]" in result.output
    assert "lr: float = 0.001 [0..1]" in result.output
    assert "mode: str = " in result.output and "{fast|slow}" in result.output
    result = invoke(server, "jobs", "kinds", "text-nope")
    assert result.exit_code == 1
    assert "unknown kind 'text-nope'; known: text-gpt" in result.output


def test_group_options_reach_the_subcommand(server: FakeServer) -> None:
    with GenserveClient(server.url, API_KEY) as client:
        job = client.train("text-gpt", 1, "alpha")
    args = ["jobs", "--url", server.url, "--api-key", API_KEY, "cancel", str(job["id"])]
    result = CliRunner().invoke(cli, args, env={"GENSERVE_URL": None, "GENSERVE_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.output


def test_datasets_upload_list_and_show(server: FakeServer, tmp_path: Path) -> None:
    corpus = tmp_path / "poems.txt"
    corpus.write_text("roses are red\nviolets are blue\n")
    result = invoke(server, "datasets", "upload", str(corpus), "--name", "poems")
    assert result.exit_code == 0, result.output
    assert "uploaded as dataset 100 'poems'" in result.output
    assert "2 characters" in result.output  # the fake counts lines; the unit comes from kind
    result = invoke(server, "datasets", "upload", str(corpus))
    assert result.exit_code == 0, result.output
    assert "already stored as dataset 100" in result.output
    for args in (["datasets"], ["datasets", "list"]):
        result = invoke(server, *args)
        assert result.exit_code == 0, result.output
        assert "100" in result.output and "poems" in result.output
    result = invoke(server, "datasets", "show", "100")
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(corpus.read_bytes()).hexdigest() in result.output
    result = invoke(server, "datasets", "show", "7")
    assert result.exit_code == 1
    assert "unknown dataset 7" in result.output


def test_default_url_comes_from_the_serve_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENSERVE_HOST", "0.0.0.0")
    monkeypatch.setenv("GENSERVE_PORT", "9123")
    assert default_url() == "http://127.0.0.1:9123"
    monkeypatch.setenv("GENSERVE_HOST", "::1")
    assert default_url() == "http://[::1]:9123"


def test_an_error_without_the_json_shape_keeps_its_status() -> None:
    error = _error_from(httpx.Response(502, text="Bad Gateway from the proxy"))
    assert isinstance(error, ClientError)
    assert (error.status, error.code, error.transient) == (502, "http_error", True)
    assert "Bad Gateway from the proxy" in error.message


def test_field_errors_name_the_field_and_the_value_sent() -> None:
    details = [
        {"loc": ["params", "lr"], "msg": "Input should be less than or equal to 1", "type": "x"},
        {"loc": ["body", "name"], "msg": "String should have at most 200 characters"},
        {"loc": ["body", "params", "sizes", 1], "msg": "Input should be a valid integer"},
        {"loc": ["params", "missing"], "msg": "Field required", "type": "missing"},
        "not a detail",
    ]
    sent = {"name": "n" * 3, "params": {"lr": 5, "sizes": [64, "x"]}}
    assert field_errors(details, sent) == [
        "params.lr: Input should be less than or equal to 1 (got 5)",
        'name: String should have at most 200 characters (got "nnn")',
        'params.sizes.1: Input should be a valid integer (got "x")',
        "params.missing: Field required",
    ]
    assert field_errors({"limit_bytes": 1}, sent) == []  # details that name no field


def test_rollback_goes_to_the_highest_version_below_the_active_one() -> None:
    def model(active: int | None, *versions: int) -> dict[str, Any]:
        return {"active_version": active, "versions": [{"version": v} for v in versions]}

    assert rollback_target(model(5, 1, 3, 5, 6)) == 3
    assert rollback_target(model(1, 1, 2)) is None
    assert rollback_target(model(None, 1, 2)) is None
