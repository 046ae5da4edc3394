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

    def delete_version(self, name: str, version: int) -> None:
        """Deletes a version and its artifact (409 while active, aliased or in traffic)."""
        self._request("DELETE", f"/models/{_segment(name)}/versions/{_segment(version)}")

    def archive_model(self, name: str) -> None:
        """DELETE /models/{name}: archives it (no longer listed or served; files kept)."""
        self._request("DELETE", f"/models/{_segment(name)}")

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Points `alias` at `version`; the model view."""
        path = f"/models/{_segment(name)}/aliases/{_segment(alias)}"
        return self._request("PUT", path, json={"version": version}).json()

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        """Removes `alias`; the model view (read again if the server answers 204)."""
        path = f"/models/{_segment(name)}/aliases/{_segment(alias)}"
        response = self._request("DELETE", path)
        return response.json() if response.content else self.get_model(name)

    def set_traffic(self, name: str, weights: dict[str, int]) -> dict[str, Any]:
        """Splits requests naming no version by weight (`{}`: back to the active version)."""
        return self._request("POST", f"/models/{_segment(name)}/traffic", json=weights).json()

    def export_version(self, name: str, version: int, target: Path) -> int:
        """Streams the version's archive into `target`; its size in bytes. Written beside it
        and renamed into place once complete, so a cut-off download leaves no file."""
        path = f"/models/{_segment(name)}/versions/{_segment(version)}/artifact"
        partial = target.with_name(f".{target.name}.part")
        size = 0
        try:
            with self._http.stream("GET", path, timeout=ACTIVATE_TIMEOUT_S) as response:
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        size += len(chunk)
            partial.replace(target)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc
        finally:
            partial.unlink(missing_ok=True)
        return size

    def import_version(self, name: str, archive: Path, activate: bool = False) -> dict[str, Any]:
        """Registers an exported archive as the next version of `name`; the server checks and
        loads it first (and serves it with `activate`), hence the long timeout."""
        with archive.open("rb") as fh:
            return self._request(
                "POST",
                f"/models/{_segment(name)}/versions",
                files={"file": (archive.name, fh, "application/x-tar")},
                data={"activate": "true"} if activate else None,
                timeout=ACTIVATE_TIMEOUT_S,
            ).json()

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

    def delete_job(self, job_id: int | str) -> None:
        self._request("DELETE", f"/train/{_segment(job_id)}")

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

    def delete_dataset(self, dataset_id: int | str) -> None:
        self._request("DELETE", f"/datasets/{_segment(dataset_id)}")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc
        if response.is_error:
            raise _error_from(response)
        return response


def _transport_error(exc: httpx.TransportError, url: str) -> ClientError:
    """No answer, or a cut-off one: status 0, which a follower may wait out."""
    if isinstance(exc, httpx.ConnectError):
        message = f"cannot connect: is `genserve serve` running at {url}?"
        return ClientError(0, "unreachable", message)
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(0, "timeout", f"{url} did not answer in time")
    return ClientError(0, "transport_error", f"{url}: {exc}")


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
