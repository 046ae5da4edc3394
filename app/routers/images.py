"""A VAE's encoder: encode, reconstruct (with an anomaly score) and interpolate images."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import ReadScope, VAEServiceDep
from app.middleware import serve_model
from app.schemas.errors import SERVING_ERRORS, serving_responses
from app.schemas.images import (
    EncodeRequest,
    EncodeResponse,
    InterpolateRequest,
    InterpolateResponse,
    ReconstructRequest,
    ReconstructResponse,
)

router = APIRouter(prefix="/images", tags=["images"], dependencies=[ReadScope])


def wants_png(request: Request) -> bool:
    return "image/png" in request.headers.get("accept", "")


@router.post("/encode", response_model=EncodeResponse, responses=SERVING_ERRORS)
async def create_encoding(
    body: EncodeRequest, request: Request, service: VAEServiceDep
) -> EncodeResponse:
    """Encode base64 PNGs to the mean and log-variance of q(z|x), per image."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    return service.to_codes(spec, await service.encode(spec, body, reconstruct=False))


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses=serving_responses("JSON, or one PNG grid (scores in X-Neg-Elbo)", "image/png"),
)
async def create_reconstruction(
    body: ReconstructRequest, request: Request, service: VAEServiceDep
) -> ReconstructResponse | Response:
    """Reconstruct base64 PNGs and score each by its negative ELBO (high: unlike the
    training data); with `Accept: image/png`, one PNG grid and the scores in `X-Neg-Elbo`."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    encoded = await service.encode(spec, body, reconstruct=True)
    if wants_png(request):
        scores = ",".join(f"{float(s):.3f}" for s in encoded.neg_elbo)
        return Response(
            await service.to_png(encoded.pixels),
            media_type="image/png",
            headers={"X-Neg-Elbo": scores},
        )
    return await service.to_reconstructions(spec, encoded)


@router.post(
    "/interpolate",
    response_model=InterpolateResponse,
    responses=serving_responses("JSON, or one PNG strip", "image/png"),
)
async def create_interpolation(
    body: InterpolateRequest, request: Request, service: VAEServiceDep
) -> InterpolateResponse | Response:
    """Decode `steps` points along the latent line between two images or two seeds; with
    `Accept: image/png`, one PNG strip."""
    spec = await service.resolve(body.model, body.user)
    serve_model(request, spec)
    result = await service.interpolate(spec, body)
    if wants_png(request):
        return Response(await service.to_png(result.pixels, strip=True), media_type="image/png")
    return await service.to_strip(spec, result)
