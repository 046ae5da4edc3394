"""One settings class: every knob comes from a `GENSERVE_*` variable or `.env`."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = REPO_ROOT / "models" / "pretrained"


class ApiKey:
    """A parsed `key:scope` pair; the key itself never appears in repr or logs."""

    __slots__ = ("_fingerprint", "key", "scope")

    def __init__(self, key: str, scope: Literal["read", "admin"]) -> None:
        self.key = key
        self.scope = scope
        self._fingerprint = ""

    @property
    def fingerprint(self) -> str:
        """What jobs record as their owner: 16 hex digits that name the key without revealing
        it. PBKDF2 (100,000 rounds), so a reader of /train cannot test guesses at a short
        key quickly; an operator recomputes it with `fingerprint(key)`."""
        if not self._fingerprint:
            self._fingerprint = fingerprint(self.key)
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ApiKey(scope={self.scope!r})"


def fingerprint(key: str) -> str:
    """The owner fingerprint of an API key (see ApiKey.fingerprint)."""
    salt = b"genserve api key fingerprint"
    return hashlib.pbkdf2_hmac("sha256", key.encode(), salt, 100_000, dklen=8).hex()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENSERVE_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    state_dir: Path = Path("./var")
    database_url: str = ""  # empty: a SQLite file under state_dir
    data_dir: Path = REPO_ROOT.parent / "shared" / "data"
    pretrained_dir: Path = PRETRAINED_DIR
    artifact_url: str = ""  # where jobs publish artifacts: an fsspec URL (s3://bucket/prefix,
    # gs://..., file:///srv/artifacts) that workers fetch from; empty: the state dir, in place
    artifact_cache_dir: str = ""  # workers' copies of fetched artifacts, one directory per
    # sha256; empty: <state_dir>/artifact-cache
    artifact_storage_options: SecretStr = SecretStr("")  # a JSON object of fsspec options for
    # GENSERVE_ARTIFACT_URL ({"endpoint_url": ...}); sent to the workers, so credentials are
    # better left to the standard variables (AWS_ACCESS_KEY_ID, ...) or the node's role

    default_text_classifier: str = "sentiment"  # /classify with texts and no model
    default_image_classifier: str = "digits"  # /classify with images and no model
    default_text_model: str = "shakespeare-gpt"  # /generate/text with no model
    default_image_model: str = "mnist-cgan"  # /generate/image with no model
    default_vae_model: str = "mnist-vae"  # /images/encode, reconstruct, interpolate: no model

    pool: Literal["local", "ray"] = "local"  # ray: one Ray actor per GPU (or CPU slot)
    ray_address: str = ""  # an existing cluster ("auto", "ray://head:10001"); empty: start one
    ray_num_cpus: int = Field(0, ge=0, le=4096)  # CPUs of a Ray instance started here; 0: all
    # the elastic Ray pool: at least ray_min_workers actors (0: as many as GENSERVE_WORKERS or
    # the GPUs say) and one on every node that joins with room for one; up to ray_max_workers
    # (0: no more than that floor) while in-flight requests exceed ray_target_inflight each
    ray_min_workers: int = Field(0, ge=0, le=1024)
    ray_max_workers: int = Field(0, ge=0, le=1024)
    ray_worker_per_node: bool = True
    ray_target_inflight: int = Field(32, ge=1, le=100_000)
    ray_scale_interval_s: float = Field(2.0, gt=0, le=3600)
    ray_scale_down_after_s: float = Field(60.0, ge=0, le=86_400)  # idle this long: removed
    # a name shared by API replicas: their actors are named after it, detached, and used by
    # all of them (empty: each API keeps private actors that end with it)
    ray_pool_name: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    # a direct (host:port) address: attach to the Ray node at this IP on the API's machine,
    # not the head's; with GCS fault tolerance the API then serves through a head restart
    ray_node_ip: str = Field("", max_length=64, pattern=r"^[0-9A-Za-z.:-]*$")
    # where training jobs run: `local` runner processes, or `ray`: claimed by the runners as
    # ever, then trained on the Ray cluster at ray_address (Ray Train, DDP over num_workers)
    train_backend: Literal["local", "ray"] = "local"
    workers: int = Field(0, ge=0, le=64)  # 0: one per GPU, or 1 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads_per_worker: int = Field(0, ge=0, le=256)  # 0: half the cores, shared by workers
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_wait_ms: float = Field(0.0, ge=0, le=10_000)  # 0: batch what queued while busy
    max_queue: int = Field(1024, ge=1, le=1_000_000)
    max_running_sequences: int = Field(64, ge=1, le=4096)  # per text model per worker
    max_waiting_sequences: int = Field(256, ge=0, le=100_000)  # beyond: 429
    # prompt tokens prefilled per decoding step (new prompts batched in one pass, a longer one
    # split over steps); 0: every waiting prompt whole, however long
    prefill_chunk_tokens: int = Field(256, ge=0, le=1_000_000)
    request_timeout_s: float = Field(30.0, gt=0, le=3600)
    generation_timeout_s: float = Field(300.0, gt=0, le=86_400)  # a whole generation, start
    # to last token; past it the worker drops the sequences and the client gets 504
    worker_start_timeout_s: float = Field(120.0, gt=0)
    model_load_timeout_s: float = Field(300.0, gt=0)  # hot-loading a new version per worker
    # artifact bytes of the versions a worker holds: the active ones and those served beside
    # them (named as name@3 or an alias, or in a traffic split), least recently used evicted
    # first; 0: no limit
    max_loaded_bytes: int = Field(2 * 1024**3, ge=0)
    registry_poll_s: float = Field(1.0, gt=0, le=3600)  # how often versions activated elsewhere
    # (the job runner, another replica) are picked up
    replica_id: str = Field("", max_length=200)  # names this replica in model placements;
    # empty: hostname:pid

    runner_slots: int = Field(1, ge=0, le=64)  # job runner processes, one job each; 0: none
    runner_device: Literal["auto", "cpu", "cuda"] = "auto"
    runner_threads: int = Field(0, ge=0, le=256)  # torch threads per runner; 0: half the cores
    job_heartbeat_s: float = Field(2.0, gt=0, le=600)
    job_stale_after_s: float = Field(30.0, gt=0)  # a running job silent this long is reclaimed
    job_max_attempts: int = Field(3, ge=1, le=100)  # runner deaths a job may cause, then failed
    job_max_seconds: float = Field(86_400.0, ge=0)  # wall-clock per job from its first start;
    # past it the job stops at its next step and registers what it trained (0: no limit)
    job_max_memory_bytes: int = Field(0, ge=0)  # POST /train refuses (422) a job whose
    # estimated peak training memory is larger; 0: half the runners' device memory
    max_queued_jobs: int = Field(1000, ge=1, le=1_000_000)  # POST /train beyond: 429
    storage_retry_s: float = Field(300.0, ge=0, le=86_400)  # a checkpoint or artifact write
    # failing with ENOSPC, EACCES, EIO, ... is retried this long before the job fails
    ready_requires: str = "database,models"  # what /readyz fails for: database, models, both
    # or none (empty); it reports all of them either way (docs/operations.md)

    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)  # POST /datasets bodies
    max_uploads_in_flight: int = Field(2, ge=1, le=64)  # being parsed at once; beyond: 429
    max_spool_bytes: int = Field(512 * 1024 * 1024, ge=1024)  # upload bytes being received
    # at once, all uploads together (declared Content-Length, else counted); beyond: 429. An
    # upload bigger than this alone is 413: it could never fit
    max_inputs: int = Field(256, ge=1, le=100_000)  # texts or images per /classify request
    # retention (docs/operations.md, "Delete and retention"); 0: no limit
    max_dataset_bytes_total: int = Field(0, ge=0)  # uploaded datasets together; past it 507
    max_versions_per_model: int = Field(0, ge=0, le=1_000_000)  # registering one more prunes
    # the oldest versions that are not active, aliased, in traffic or built-in (files too)
    max_job_metric_rows: int = Field(2000, ge=10, le=10_000_000)  # history rows kept per job:
    # the first and the latest, the middle thinned to every other row when past it
    sweep_grace_s: float = Field(3600.0, ge=0)  # the start-up sweep leaves unreferenced files
    # this young alone: another replica may be writing them before their row commits
    max_text_chars: int = Field(10_000, ge=1)
    max_prompt_chars: int = Field(4096, ge=1)
    max_new_tokens: int = Field(1024, ge=1, le=100_000)
    max_images: int = Field(64, ge=1, le=4096)  # per /generate/image request

    drain_timeout_s: float = Field(20.0, ge=0, le=3600)  # SIGTERM: in-flight work may finish
    # this long; then streams end with an `error` event and other requests with a JSON 503
    header_timeout_s: float = Field(10.0, gt=0, le=600)  # a request's headers, all of them
    body_timeout_s: float = Field(30.0, gt=0, le=3600)  # silence while a body is being sent
    keep_alive_s: float = Field(5.0, gt=0, le=600)  # an idle keep-alive connection is closed
    max_connections: int = Field(0, ge=0, le=1_000_000)  # 0: the open-file limit less 128

    api_keys: SecretStr = SecretStr("")  # "key:scope,..." with scope read|admin; empty: off

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr) -> SecretStr:
        for item in filter(None, (p.strip() for p in value.get_secret_value().split(","))):
            key, sep, scope = item.rpartition(":")
            if not sep or not key or scope not in ("read", "admin"):
                raise ValueError("GENSERVE_API_KEYS must be 'key:read' or 'key:admin' items")
            if len(key) < 8:
                raise ValueError("API keys must be at least 8 characters long")
        return value

    @field_validator("artifact_url")
    @classmethod
    def _check_artifact_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        protocol, sep, rest = value.partition("://")
        if not sep or not protocol or not rest.strip("/"):
            raise ValueError("GENSERVE_ARTIFACT_URL must be a URL like s3://bucket/prefix")
        import fsspec

        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError as e:
            raise ValueError(f"GENSERVE_ARTIFACT_URL: unknown protocol {protocol!r}") from e
        except ImportError as e:  # s3fs, gcsfs, ... not installed
            hint = " (pip install 'genserve[s3]')" if protocol in ("s3", "s3a") else ""
            raise ValueError(f"GENSERVE_ARTIFACT_URL {protocol}://: {e}{hint}") from e
        return value

    @field_validator("artifact_storage_options")
    @classmethod
    def _check_storage_options(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        try:
            options = json.loads(text) if text else {}
        except ValueError as e:
            raise ValueError("GENSERVE_ARTIFACT_STORAGE_OPTIONS must be JSON") from e
        if not isinstance(options, dict):
            raise ValueError("GENSERVE_ARTIFACT_STORAGE_OPTIONS must be a JSON object")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        """Made absolute once, where the service starts: Ray actors, Ray Train workers and
        job runners run elsewhere (another directory, another node), and a relative path
        would name a different place in each."""
        return value.expanduser().resolve()

    @field_validator("ready_requires")
    @classmethod
    def _check_ready_requires(cls, value: str) -> str:
        wanted = {p.strip() for p in value.split(",") if p.strip()}
        if wanted - {"database", "models"}:
            raise ValueError("GENSERVE_READY_REQUIRES lists 'database' and/or 'models'")
        return ",".join(sorted(wanted))

    @model_validator(mode="after")
    def _check_device(self) -> Settings:
        if self.device == "cuda" and not _cuda_device_nodes():
            raise ValueError("GENSERVE_DEVICE=cuda but no NVIDIA device is visible")
        return self

    @cached_property
    def keys(self) -> list[ApiKey]:
        items = filter(None, (p.strip() for p in self.api_keys.get_secret_value().split(",")))
        return [ApiKey(*item.rsplit(":", 1)) for item in items]  # type: ignore[arg-type]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'genserve.db').resolve()}"

    def storage_options(self) -> dict[str, Any]:
        """GENSERVE_ARTIFACT_STORAGE_OPTIONS, parsed (validated at startup)."""
        text = self.artifact_storage_options.get_secret_value().strip()
        return json.loads(text) if text else {}

    def artifact_cache_path(self) -> Path:
        """Absolute, so that every worker process (and Ray actor) names the same place."""
        return Path(self.artifact_cache_dir or self.state_dir / "artifact-cache").resolve()

    def worker_devices(self) -> list[str]:
        """One worker per GPU on CUDA machines, `workers` CPU workers otherwise."""
        gpus = _cuda_device_nodes() if self.device in ("auto", "cuda") else 0
        if gpus:
            count = self.workers or gpus
            return [f"cuda:{i % gpus}" for i in range(count)]
        return ["cpu"] * (self.workers or 1)

    def default_models(self) -> set[str]:
        """The models requests get when they name none (one per task and input)."""
        return {
            self.default_text_classifier,
            self.default_image_classifier,
            self.default_text_model,
            self.default_image_model,
        }

    def all_default_models(self) -> set[str]:
        """Every model a request naming none may get: the task defaults and the default VAE
        of /images/* (an image generator too, so not marked as its task's default)."""
        return self.default_models() | {self.default_vae_model}

    def worker_threads(self) -> int:
        """Half the cores go to workers: the API process and its clients need the rest, and
        oversubscribed OpenMP threads spin, making small models 100x slower."""
        if self.threads_per_worker:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // 2 // len(self.worker_devices()))

    def runner_gpu(self, slot: int) -> str | None:
        """The GPU runner `slot` sees alone (CUDA_VISIBLE_DEVICES), so that the jobs of several
        runners spread one per GPU instead of all training on the first; None on CPU, and for
        a lone runner, which sees every GPU (for data-parallel jobs, num_workers > 1)."""
        wanted = self.runner_device if self.runner_device != "auto" else self.device
        if wanted not in ("auto", "cuda") or self.runner_slots <= 1:
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            gpus = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        else:
            gpus = [str(i) for i in range(_cuda_device_nodes())]
        return gpus[slot % len(gpus)] if gpus else None

    def runner_device_name(self) -> str:
        """Training goes to the first GPU when there is one; CPU otherwise."""
        wanted = self.runner_device if self.runner_device != "auto" else self.device
        if wanted in ("auto", "cuda") and _cuda_device_nodes():
            return "cuda"
        return "cpu"

    def job_memory_limit(self) -> int:
        """The most memory one job may need: GENSERVE_JOB_MAX_MEMORY_BYTES, else half of what
        its runner trains on (the GPU's memory on CUDA; else the machine's, or the
        container's limit): the other half is for the service, the workers and the OS."""
        if self.job_max_memory_bytes:
            return self.job_max_memory_bytes
        gpu = gpu_memory_bytes() if self.runner_device_name() == "cuda" else 0
        return (gpu or system_memory_bytes()) // 2

    def runner_torch_threads(self) -> int:
        if self.runner_threads:
            return self.runner_threads
        return max(1, (os.cpu_count() or 1) // 2 // max(1, self.runner_slots))


def _cuda_device_nodes() -> int:
    """Counts GPUs without importing torch, so the API process stays light."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(glob.glob("/dev/nvidia[0-9]*"))


@cache
def system_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when the process runs in a smaller container."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


@cache
def gpu_memory_bytes() -> int:
    """The smallest GPU's memory, from nvidia-smi (the API process has no torch); 0 if unknown."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        sizes = [int(line) * 2**20 for line in out.split() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0
    return min(sizes, default=0)


def get_settings() -> Settings:
    return Settings()
