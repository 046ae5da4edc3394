"""Prometheus metrics; all recorded in the API process, so no multiprocess mode is needed.

Training jobs are the exception that proves it: they change state in the runner processes, so
their metrics are read from the database at scrape time (`JobCounts`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.db import Database
from app.tables import TrainingJob

REQUESTS = Counter(
    "genserve_requests_total", "HTTP requests", ["method", "endpoint", "model", "status"]
)
LATENCY = Histogram(
    "genserve_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint", "model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "genserve_batch_size",
    "Rows per model forward pass in the workers",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
QUEUE_DEPTH = Gauge("genserve_queue_depth", "Requests submitted and not yet answered", ["model"])
WORKER_RESTARTS = Counter("genserve_worker_restarts_total", "Workers restarted after dying")
WORKERS_READY = Gauge("genserve_workers_ready", "Workers with their models loaded")
MODEL_LOAD_SECONDS = Gauge(
    "genserve_model_load_seconds", "Seconds a worker took to load a model at start", ["model"]
)
MODEL_DEGRADED = Gauge(
    "genserve_model_degraded",
    "1 while this replica cannot serve the desired version of a model (it keeps the old one)",
    ["model"],
)
MODEL_SERVED_VERSION = Gauge(
    "genserve_model_served_version", "The version of a model this replica serves", ["model"]
)

# -- generation: counted where the worker's events arrive in the API process -----------------

PROMPT_TOKENS = Counter(
    "genserve_prompt_tokens_total",
    "Prompt tokens of generation and scoring requests (once per request, as in its usage)",
    ["model"],
)
COMPLETION_TOKENS = Counter(
    "genserve_completion_tokens_total", "Tokens generated, every choice counted", ["model"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "genserve_time_to_first_token_seconds",
    "From a generation's admission to its first generated token (any choice)",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INTER_TOKEN_LATENCY = Histogram(
    "genserve_inter_token_latency_seconds",
    "Between consecutive generated tokens of one choice",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5),
)
RUNNING_SEQUENCES = Gauge(
    "genserve_running_sequences",
    "Sequences in a worker's latest decoding step, of those this replica admitted",
    ["model", "worker"],
)
WAITING_SEQUENCES = Gauge(
    "genserve_waiting_sequences",
    "Sequences admitted to a worker and not in its latest decoding step",
    ["model", "worker"],
)
MODEL_REQUESTS = Counter(
    "genserve_model_requests_total",
    "HTTP requests served by a model, by the version that served them",
    ["model", "version", "status"],
)


# -- training jobs: read from the database, so every replica reports the same fleet-wide counts


class JobCounts(Collector):
    """Training jobs by status, exported at scrape time from a snapshot of the database.

    Job rows are written by the runner processes, so no API replica sees the state changes;
    counting rows by status is right whichever process or replica wrote them. `refresh` reads
    at most once per MAX_AGE_S, in a thread, and gives up after TIMEOUT_S: a scrape never
    fails or hangs on a database outage, it reports `genserve_training_jobs_up 0` and leaves
    the job series out (absent means unknown, not zero).
    """

    MAX_AGE_S = 2.0
    TIMEOUT_S = 2.0
    ACTIVE = ("queued", "running")
    FINISHED = ("succeeded", "failed", "cancelled")

    def __init__(self) -> None:
        self.counts: dict[str, int] | None = None  # None: the last read failed
        self.read_at = -math.inf
        self._reading: asyncio.Future[dict[str, int]] | None = None

    async def refresh(self, db: Database) -> None:
        if time.monotonic() - self.read_at < self.MAX_AGE_S:
            return
        if self._reading is None or self._reading.done():  # one read in flight, however many
            self._reading = asyncio.ensure_future(run_in_threadpool(_count_jobs, db))  # scrapes
            self._reading.add_done_callback(lambda read: read.cancelled() or read.exception())
        try:
            self.counts = await asyncio.wait_for(asyncio.shield(self._reading), self.TIMEOUT_S)
        except Exception:
            self.counts = None
        self.read_at = time.monotonic()

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        return self._families(self.counts)

    def _families(self, counts: dict[str, int] | None) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "genserve_training_jobs_up", "1 when the job counts were read from the database"
        )
        up.add_metric([], counts is not None)
        yield up
        if counts is None:
            return
        active = GaugeMetricFamily("genserve_training_jobs", "Training jobs", labels=["status"])
        for status in self.ACTIVE:
            active.add_metric([status], counts.get(status, 0))
        yield active
        finished = CounterMetricFamily(
            "genserve_training_jobs_finished",
            "Training jobs finished, by outcome (all time, all replicas)",
            labels=["outcome"],
        )
        for outcome in self.FINISHED:
            finished.add_metric([outcome], counts.get(outcome, 0))
        yield finished


def _count_jobs(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(TrainingJob.status, func.count()).group_by(TrainingJob.status)
        )
        return {status: count for status, count in rows}


JOBS = JobCounts()
REGISTRY.register(JOBS)
