"""System routes (API.md §2): /, /health, /ready, /metrics and /openapi.json; all public."""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from litestar import Request, Response, get

from lexia.api.errors import documented, error_response
from lexia.api.security import public
from lexia.errors import AuthenticationFailed
from lexia.schemas.common import ErrorDetail
from lexia.schemas.system import Health, Readiness, Root
from lexia.services.health import Health as HealthService
from lexia.services.health import refresh_gauges
from lexia.services.wiring import Services
from lexia.settings import VERSION

ROOT = Root(name="Lexia", version=VERSION, docs="/docs", openapi="/openapi.json", health="/health", ready="/ready")
HEALTH = Health(version=VERSION)


@get("/", opt=public(), responses=documented(public=True))
async def root() -> Root:
    """Name, version and links."""
    return ROOT


@get("/health", opt=public(), responses=documented(public=True))
async def health() -> Health:
    """Liveness: the process serves HTTP (no I/O)."""
    return HEALTH


@get("/ready", opt=public(), responses=documented(503, public=True))
async def ready(health: HealthService) -> Response[Readiness]:
    """Readiness: database, Redis, a worker heartbeat and every enabled engine (503 names what fails)."""
    checks, error = await health.checks()
    if error is None:
        return Response(Readiness(status="ready", checks=checks))
    detail = msgspec.convert(error.body()["error"], ErrorDetail)
    body = Readiness(status="not_ready", checks=checks, error=detail)
    return Response(body, status_code=503, headers={"Retry-After": "5"})


@get("/metrics", opt=public(), media_type="text/plain; version=0.0.4", responses=documented(401, public=True))
async def metrics(request: Request[Any, Any, Any], services: Services) -> Response[bytes]:
    """Prometheus text format; bearer-protected when LEXIA_METRICS_TOKEN is set."""
    token = services.settings.server.metrics_token.reveal()
    if token:
        presented = request.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return error_response(AuthenticationFailed("A valid metrics token is required", code="invalid_api_key"))
    await refresh_gauges(services.jobs, services.pod, services.metrics)
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


@get("/openapi.json", opt=public(), include_in_schema=False)
async def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI 3.1 document (its viewer is at /docs)."""
    schema = request.app.openapi_schema.to_schema()
    return Response(msgspec.json.encode(schema), media_type="application/vnd.oai.openapi+json")
