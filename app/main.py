"""Assembles the app: settings, database, registry, worker pool, middleware and routers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from app.db import Database
from app.drain import Drain, DrainGate
from app.errors import install_error_handlers
from app.jobs.store import JobStore
from app.jobs.supervisor import RunnerSupervisor
from app.middleware import BodySizeLimit, RequestContext, RequestMetrics, TextGuard, UploadGate
from app.pool.base import WorkerPool
from app.pool.local import LocalPool
from app.routers import (
    classify,
    datasets,
    docs,
    generate,
    health,
    images,
    models,
    openai,
    score,
    train,
    ui,
)
from app.services.archives import IMPORT_PATH, ArchiveService
from app.services.classify import ClassifyService
from app.services.datasets import DatasetService
from app.services.generate import GenerateService
from app.services.generate_image import GenerateImageService
from app.services.openai import OpenAIService
from app.services.registry import ModelRegistry
from app.services.retention import Retention
from app.services.training import TrainingService
from app.services.vae import VAEService
from app.settings import Settings, get_settings

log = logging.getLogger("genserve")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    drain = Drain(settings.drain_timeout_s)
    # sse-starlette would cut every stream the moment uvicorn is told to exit: the drain
    # ends them itself, with an `error` event past its deadline.
    AppStatus.disable_automatic_graceful_drain()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings)
        app.state.datasets = DatasetService(settings, db)
        app.state.datasets.sweep_spool()
        app.state.retention = Retention(db, settings)
        # files whose rows a delete committed before a crash: before any runner starts
        await asyncio.to_thread(app.state.retention.sweep)
        registry = ModelRegistry(db, settings)
        registry.sync_builtin()
        specs = list(registry.refresh().values())
        pool: WorkerPool
        if settings.pool == "ray":
            from app.pool.ray_pool import RayPool  # imports Ray, so only when asked for

            pool = RayPool(settings)
        else:
            pool = LocalPool(settings)
        await pool.start(specs)
        # while the workers load (seconds): the built-in datasets (digits alone reads its
        # data with scikit-learn for a second), in a thread so the pool's messages flow
        await asyncio.to_thread(app.state.datasets.sync_builtin)
        app.state.db, app.state.registry, app.state.pool = db, registry, pool
        app.state.classify = ClassifyService(settings, registry, pool)
        app.state.generate = GenerateService(settings, registry, pool, drain)
        app.state.openai = OpenAIService(app.state.generate)
        app.state.generate_image = GenerateImageService(settings, registry, pool)
        app.state.vae = VAEService(settings, registry, pool)
        app.state.training = TrainingService(db, app.state.datasets, settings)
        app.state.archives = ArchiveService(settings, db, registry, app.state.datasets)
        runners = RunnerSupervisor(settings, JobStore(db, settings))
        await runners.start()
        app.state.runners = runners
        watcher = asyncio.create_task(registry.watch(pool), name="registry-watch")
        log.info("serving %s on %d worker(s)", sorted(registry.active), len(pool.workers()))
        # What start-up made lives as long as the process: moved out of the collector's
        # generations, a full collection no longer walks it and stalls every request
        # (/classify p99 at 32 connections: 150-164 -> 36-44 ms). Garbage first, so none of
        # it is kept; unfrozen at shutdown, so an app made and dropped in-process is freed.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            watcher.cancel()
            await runners.stop()
            await pool.stop()
            db.dispose()

    app = FastAPI(
        title="genserve",
        summary="Train and serve generative models and classifiers over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # app/routers/docs.py serves them without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.drain, app.state.draining = drain, False
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        # an upload larger than the whole spool could never be admitted: 413, not 429
        path_limits={
            "/datasets": min(settings.max_upload_bytes, settings.max_spool_bytes),
            IMPORT_PATH: min(settings.max_upload_bytes, settings.max_spool_bytes),
        },
    )
    app.add_middleware(
        UploadGate,
        paths={"/datasets"},
        patterns=(IMPORT_PATH,),  # POST /models/{name}/versions: an imported archive
        limit=settings.max_uploads_in_flight,
        max_bytes=settings.max_spool_bytes,
    )
    app.add_middleware(TextGuard)
    app.add_middleware(DrainGate, drain=drain)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestContext)  # outermost: refusals by the others get an id too
    for router in (
        health.router,
        classify.router,
        generate.router,
        images.router,
        score.router,
        openai.router,
        models.router,
        datasets.router,
        train.router,
        ui.router,
        docs.router,
    ):
        app.include_router(router)
    return app
