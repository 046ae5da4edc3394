"""`Annotated` dependencies shared by the routers.

All are `async def`: they do no I/O, and FastAPI runs a plain `def` dependency in its thread
pool, a thread hop and a GIL handoff on every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request

from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.pool.base import WorkerPool
from app.services.classify import ClassifyService
from app.services.datasets import DatasetService
from app.services.generate import GenerateService
from app.services.generate_image import GenerateImageService
from app.services.registry import ModelRegistry
from app.services.training import TrainingService
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_pool(request: Request) -> WorkerPool:
    return request.app.state.pool


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_classify_service(request: Request) -> ClassifyService:
    return request.app.state.classify


async def get_dataset_service(request: Request) -> DatasetService:
    return request.app.state.datasets


async def get_training_service(request: Request) -> TrainingService:
    return request.app.state.training


async def get_generate_service(request: Request) -> GenerateService:
    return request.app.state.generate


async def get_generate_image_service(request: Request) -> GenerateImageService:
    return request.app.state.generate_image


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ClassifyServiceDep = Annotated[ClassifyService, Depends(get_classify_service)]
DatasetServiceDep = Annotated[DatasetService, Depends(get_dataset_service)]
TrainingServiceDep = Annotated[TrainingService, Depends(get_training_service)]
GenerateServiceDep = Annotated[GenerateService, Depends(get_generate_service)]
GenerateImageServiceDep = Annotated[GenerateImageService, Depends(get_generate_image_service)]


def require_scope(scope: Literal["read", "admin"]):  # type: ignore[no-untyped-def]
    """Checks `Authorization: Bearer <key>` when GENSERVE_API_KEYS is set; admin implies read."""

    async def check(request: Request) -> None:
        keys = request.app.state.settings.keys
        if not keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token:
            raise Unauthorized(
                "missing API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Compare against every key, in constant time, so timing reveals nothing.
        match = None
        for key in keys:
            if hmac.compare_digest(key.key.encode(), token.encode()):
                match = key
        if match is None:
            raise Unauthorized("invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if scope == "admin" and match.scope != "admin":
            raise Forbidden("this API key has read scope; this action needs admin")

    return Depends(check)


ReadScope = require_scope("read")
AdminScope = require_scope("admin")
