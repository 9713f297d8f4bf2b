"""System routes: /, /health, /ready, /metrics and the model list."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from litestar import Request, Response, get
from redis.exceptions import RedisError

from lexia.api.deps import Services, current_services, services
from lexia.api.errors import error_response
from lexia.api.jobs import refresh_job_gauges
from lexia.api.security import PUBLIC, route_opt
from lexia.engines.base import ModelInfo
from lexia.errors import AuthenticationFailed, EngineUnavailable, ModelNotFound, ServiceUnavailable
from lexia.queue import HEARTBEAT_KEY
from lexia.settings import VERSION

Req = Request[Any, Any, Any]
HEARTBEAT_MAX_AGE = 30.0
CHECK_TIMEOUT = 2.0


@get("/", opt=PUBLIC)
async def root() -> dict[str, Any]:
    """Name, version and links."""
    return {
        "name": "Lexia",
        "version": VERSION,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/health",
        "ready": "/ready",
    }


@get("/openapi.json", opt=PUBLIC, include_in_schema=False)
async def openapi_document(request: Req) -> Response[bytes]:
    """The OpenAPI 3.1 document (its viewer is at /docs)."""
    schema = request.app.openapi_schema.to_schema()
    return Response(msgspec.json.encode(schema), media_type="application/vnd.oai.openapi+json")


@get("/health", opt=PUBLIC)
async def health() -> dict[str, Any]:
    """Liveness: no I/O."""
    return {"status": "ok", "version": VERSION}


async def _check_db(svc: Services) -> str:
    async with svc.db.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
    return "ok"


async def _check_redis(svc: Services) -> str:
    await svc.redis.ping()
    return "ok"


async def _check_worker(svc: Services) -> str:
    beat = await svc.redis.get(HEARTBEAT_KEY)
    if beat is None or time.time() - float(beat) > HEARTBEAT_MAX_AGE:
        return "fail"
    return "ok"


async def _guard(check: Any, svc: Services) -> str:
    try:
        return str(await asyncio.wait_for(check(svc), CHECK_TIMEOUT))
    except (TimeoutError, RedisError, OSError, sa.exc.SQLAlchemyError, EngineUnavailable, ValueError):
        return "fail"


async def _engine_check(engine: Any) -> str:
    try:
        await asyncio.wait_for(engine.check(), CHECK_TIMEOUT)
    except (TimeoutError, EngineUnavailable):
        return "fail"
    return "ok"


@get("/ready", opt=PUBLIC)
async def ready(request: Req) -> Response[Any]:
    """Readiness: database, Redis, worker heartbeat and every enabled engine."""
    svc = services(request)
    db, redis_state = await asyncio.gather(_guard(_check_db, svc), _guard(_check_redis, svc))
    worker = await _guard(_check_worker, svc) if redis_state == "ok" else "fail"
    checks: dict[str, str] = {"database": db, "redis": redis_state, "worker": worker}
    for name, engine in (("llm", svc.engines.llm), ("stt", svc.engines.stt), ("diarization", svc.engines.diarizer)):
        if name in svc.engines.disabled or engine is None:
            checks[name] = "disabled"
        else:
            checks[name] = await _engine_check(engine)
        svc.metrics.engine_up.labels(name).set(1 if checks[name] == "ok" else 0)
    failing = [name for name, state in checks.items() if state == "fail"]
    if not failing:
        return Response({"status": "ready", "checks": checks})
    engine_failure = all(name in ("llm", "stt", "diarization") for name in failing)
    error = (
        EngineUnavailable(f"Not ready: {', '.join(failing)} failing")
        if engine_failure
        else ServiceUnavailable(f"Not ready: {', '.join(failing)} failing")
    )
    body = {"status": "not_ready", "checks": checks, **error.body()}
    return Response(body, status_code=503, headers={"Retry-After": "5"})


async def _refresh_gauges(svc: Services) -> None:
    with contextlib.suppress(sa.exc.SQLAlchemyError, OSError, TimeoutError):
        await asyncio.wait_for(refresh_job_gauges(svc), CHECK_TIMEOUT)


@get("/metrics", opt=PUBLIC)
async def metrics(request: Req) -> Response[bytes]:
    """Prometheus text format; bearer-protected when LEXIA_METRICS_TOKEN is set.

    Before rendering: the lexia_jobs gauges from the database, and the pod-wide job durations and
    webhook attempts from Redis (each bounded in time; on failure the last values are shown).
    """
    svc = services(request)
    token = svc.settings.server.metrics_token.reveal()
    if token:
        presented = request.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            return error_response(
                AuthenticationFailed("A valid metrics token is required", code="invalid_api_key")
            )
    await asyncio.gather(_refresh_gauges(svc), svc.pod.refresh(svc.metrics.pod))
    return Response(
        svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def model_object(info: ModelInfo) -> dict[str, Any]:
    """The OpenAI model object with Lexia's extensions."""
    body: dict[str, Any] = {
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": "lexia",
        "kind": info.kind,
        "status": info.status,
        "aliases": list(info.aliases),
    }
    if info.kind == "llm":
        body["context_length"] = info.context_length
    return body


_models_cache: tuple[list[ModelInfo] | None, bytes] = (None, b"")  # the last list seen, encoded


def _models_body(models: list[ModelInfo]) -> bytes:
    # ModelInfo is frozen and engines keep theirs, so an equal list (compared by identity
    # first, in C) means the same bytes.
    global _models_cache  # noqa: PLW0603
    if models != _models_cache[0]:
        body = msgspec.json.encode({"object": "list", "data": [model_object(m) for m in models]})
        _models_cache = (models, body)
    return _models_cache[1]


@get("/v1/models", opt=route_opt(None), media_type="application/json")
async def list_models() -> bytes:
    """Every served model (an OpenAI model list)."""
    return _models_body(current_services().engines.models())


@get("/v1/models/{model_id:path}", opt=route_opt(None))
async def get_model(request: Req) -> dict[str, Any]:
    """One model by id or alias."""
    name = str(request.path_params["model_id"]).lstrip("/")
    info = services(request).engines.find_model(name)
    if info is None:
        raise ModelNotFound(name, param=None)
    return model_object(info)
