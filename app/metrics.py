"""Prometheus metrics; all recorded in the API process, so no multiprocess mode is needed."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
