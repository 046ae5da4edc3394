from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import ClassifyServiceDep, ReadScope
from app.middleware import serve_model
from app.schemas.classify import ClassifyRequest, ClassifyResponse
from app.schemas.errors import SERVING_ERRORS

router = APIRouter(tags=["classify"], dependencies=[ReadScope])


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=SERVING_ERRORS,
)
async def create_classification(
    body: ClassifyRequest, request: Request, service: ClassifyServiceDep
) -> Response:
    """Classify texts or base64 PNG images; omit `model` for the default of that input type."""
    spec = await service.resolve(body)
    serve_model(request, spec)
    result = await service.classify(body, spec)
    # Built by us from the response model: pydantic-core writes the JSON in one pass, where
    # FastAPI would validate the object again and encode it through the stdlib.
    return Response(result.model_dump_json(), media_type="application/json")
