"""`Annotated` dependencies shared by the routers.

All are `async def`: they do no I/O, and FastAPI runs a plain `def` dependency in its thread
pool, a thread hop and a GIL handoff on every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import Depends, Request

from app.db import Database
from app.errors import Forbidden, Unauthorized
from app.pool.base import WorkerPool
from app.services.archives import ArchiveService
from app.services.classify import ClassifyService
from app.services.datasets import DatasetService
from app.services.generate import GenerateService
from app.services.generate_image import GenerateImageService
from app.services.openai import OpenAIService
from app.services.registry import ModelRegistry
from app.services.retention import Retention
from app.services.training import TrainingService
from app.services.vae import VAEService
from app.settings import ApiKey, Settings


def from_state(name: str):  # type: ignore[no-untyped-def]
    """A dependency returning what the lifespan put on app.state under `name`."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return Depends(get)


SettingsDep = Annotated[Settings, from_state("settings")]
DbDep = Annotated[Database, from_state("db")]
PoolDep = Annotated[WorkerPool, from_state("pool")]
RegistryDep = Annotated[ModelRegistry, from_state("registry")]
ClassifyServiceDep = Annotated[ClassifyService, from_state("classify")]
DatasetServiceDep = Annotated[DatasetService, from_state("datasets")]
TrainingServiceDep = Annotated[TrainingService, from_state("training")]
GenerateServiceDep = Annotated[GenerateService, from_state("generate")]
OpenAIServiceDep = Annotated[OpenAIService, from_state("openai")]
GenerateImageServiceDep = Annotated[GenerateImageService, from_state("generate_image")]
VAEServiceDep = Annotated[VAEService, from_state("vae")]
RetentionDep = Annotated[Retention, from_state("retention")]
ArchiveServiceDep = Annotated[ArchiveService, from_state("archives")]


def require_scope(scope: Literal["read", "admin"]):  # type: ignore[no-untyped-def]
    """Checks `Authorization: Bearer <key>` when GENSERVE_API_KEYS is set; admin implies read.

    The dependency's value is the matching key (None with auth off), for handlers that record
    who asked (`AdminKey`); FastAPI runs it once per request however often it is named.
    """

    async def check(request: Request) -> ApiKey | None:
        keys = request.app.state.settings.keys
        if not keys:
            return None
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
        return match

    return Depends(check)


ReadScope = require_scope("read")
AdminScope = require_scope("admin")
AdminKey = Annotated[ApiKey | None, AdminScope]  # the admin key of the request, if auth is on
