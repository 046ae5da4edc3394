"""A small HTTP client of a running genserve server, so the CLI never touches its database."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

# Statuses a follower may wait out: the server is restarting, overloaded or not ready yet.
TRANSIENT_STATUSES = frozenset({0, 429, 502, 503, 504})
ACTIVATE_TIMEOUT_S = 300.0  # a large version's verification and load on every worker


class ClientError(Exception):
    """An error the server reported (its JSON `error` object), or no answer at all (status 0)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUSES


class GenserveClient:
    """One method per endpoint the CLI uses; every failure becomes a `ClientError`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GenserveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # models

    def list_models(self) -> dict[str, Any]:
        """`{data, count}`: every model with its versions, as GET /models answers."""
        return self._request("GET", "/models").json()

    def get_model(self, name: str) -> dict[str, Any]:
        """One model as GET /models/{name} answers: desired and served version, replicas."""
        return self._request("GET", f"/models/{_segment(name)}").json()

    def activate_version(self, name: str, version: int) -> dict[str, Any]:
        """Makes `version` the one served; the server answers once this replica serves it
        (verified and hot-loaded), which can take longer than a read, hence the timeout."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}/activate"
        return self._request("POST", path, timeout=ACTIVATE_TIMEOUT_S).json()

    # training jobs

    def train(
        self,
        kind: str,
        dataset: int | str,
        name: str,
        params: dict[str, Any] | None = None,
        activate: bool = False,
        parent: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queues a job; `parent` ({"model", "version"?}) makes it a fine-tune of that version."""
        body: dict[str, Any] = {
            "kind": kind,
            "dataset": dataset,
            "name": name,
            "params": params or {},
            "activate": activate,
        }
        if parent is not None:
            body["from"] = parent
        return self._request("POST", "/train", json=body).json()

    def list_jobs(
        self,
        status: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> dict[str, Any]:
        query = {"status": status, "kind": kind, "name": name, "limit": limit, "offset": offset}
        params = {k: v for k, v in query.items() if v is not None}
        return self._request("GET", "/train", params=params).json()

    def get_job(self, job_id: int | str) -> dict[str, Any]:
        return self._request("GET", f"/train/{_segment(job_id)}").json()

    def cancel_job(self, job_id: int | str) -> dict[str, Any]:
        return self._request("POST", f"/train/{_segment(job_id)}/cancel").json()

    def list_kinds(self) -> list[dict[str, Any]]:
        return self._request("GET", "/train/kinds").json()["data"]

    # datasets

    def upload_dataset(
        self, path: str | Path, name: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Returns (dataset, created): the server answers 200 when it already had the file."""
        path = Path(path)
        data = {"name": name} if name else None
        with path.open("rb") as fh:
            response = self._request(
                "POST", "/datasets", files={"file": (path.name, fh)}, data=data
            )
        return response.json(), response.status_code == 201

    def list_datasets(self) -> dict[str, Any]:
        return self._request("GET", "/datasets").json()

    def get_dataset(self, dataset_id: int | str) -> dict[str, Any]:
        return self._request("GET", f"/datasets/{_segment(dataset_id)}").json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            message = f"cannot connect: is `genserve serve` running at {self.url}?"
            raise ClientError(0, "unreachable", message) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(0, "timeout", f"{self.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ClientError(0, "transport_error", f"{self.url}: {exc}") from exc
        if response.is_error:
            raise _error_from(response)
        return response


def _segment(value: int | str) -> str:
    """Quotes a path segment, so that a name like `a/b` cannot reach another route."""
    return quote(str(value), safe="")


def _error_from(response: httpx.Response) -> ClientError:
    """Reads the server's `{"error": {code, message, details}}`, or falls back to the status."""
    try:
        error = response.json()["error"]
        return ClientError(
            response.status_code, str(error["code"]), str(error["message"]), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ClientError(
            response.status_code, "http_error", f"HTTP {response.status_code}: {text}"
        )
