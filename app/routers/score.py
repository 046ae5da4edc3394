"""Scoring: how likely a text model finds a text, token by token."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.deps import GenerateServiceDep, ReadScope
from app.middleware import serve_model
from app.schemas.errors import SERVING_ERRORS
from app.schemas.generate import ScoreRequest, ScoreResponse

router = APIRouter(tags=["generate"], dependencies=[ReadScope])


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=SERVING_ERRORS,  # type: ignore[arg-type]
)
async def create_score(
    body: ScoreRequest, request: Request, service: GenerateServiceDep
) -> ScoreResponse:
    """The text's total log-probability, nats per character and perplexity, and per token
    its logprob (P(token | the text before it)) with the top-k next tokens if asked."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    return await service.score(spec, body)
