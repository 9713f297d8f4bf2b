"""The Litestar application: create_app() wires settings, data stores, engines and routes."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import Message, Receive, Scope, Send

from lexia.api.deps import KEY_STATE, RL_HEADERS_STATE, USAGE_STATE, Services
from lexia.api.errors import handle_exception
from lexia.api.keys import KeyController, TenantController
from lexia.api.requestid import request_id
from lexia.api.security import AuthMiddleware
from lexia.api.system import get_model, health, list_models, metrics, openapi_document, ready, root
from lexia.api.usage import usage
from lexia.db import open_db
from lexia.engines import Engines, open_engines
from lexia.logs import configure_logging
from lexia.metrics import Metrics
from lexia.services.keys import KeyService
from lexia.services.limits import RedisLimiter
from lexia.services.usage import UsageEvent, UsageRecorder
from lexia.settings import VERSION, Settings, environment_with_dotenv, load_settings

log = logging.getLogger("lexia.app")
T0_STATE = "lexia.t0"
DONE_STATE = "lexia.done"
STATUS_STATE = "lexia.status"


class LexiaApp(Litestar):
    """Litestar with a start time stamped on every HTTP request before routing."""

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[T0_STATE] = time.perf_counter()
        await super().__call__(scope, receive, send)


def record_request(scope: Scope, status: int | None = None) -> None:
    """Metrics and the usage event of a finished request; runs once per request."""
    state = scope["state"]
    if state.get(DONE_STATE):
        return
    state[DONE_STATE] = True
    svc: Services = scope["litestar_app"].state.services
    elapsed = time.perf_counter() - state.get(T0_STATE, time.perf_counter())
    code = status or state.get(STATUS_STATE, 500)
    route = scope.get("path_template") or "unmatched"
    svc.metrics.requests.labels(route, scope.get("method", ""), str(code)).inc()
    svc.metrics.request_seconds.labels(route).observe(elapsed)
    key = state.get(KEY_STATE)
    if key is None:
        return
    if svc.metrics.per_key:
        svc.metrics.key_requests.labels(key.id).inc()
    metered: dict[str, Any] = state.get(USAGE_STATE) or {}
    svc.usage.record(
        UsageEvent(
            created_at=datetime.now(UTC),
            tenant_id=key.tenant_id,
            key_id=key.id,
            request_id=request_id(scope),
            route=route,
            method=scope.get("method", ""),
            status=code,
            latency_ms=round(elapsed * 1000.0, 3),
            **metered,
        )
    )


async def observe(message: Message, scope: Scope) -> None:
    """before_send hook: request id and rate-limit headers, then metrics and usage at the end."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        headers["X-Request-ID"] = request_id(scope)
        state = scope["state"]
        for name, value in (state.get(RL_HEADERS_STATE) or {}).items():
            headers[name] = value
        state[STATUS_STATE] = message["status"]
    elif message["type"] == "http.response.body" and not message.get("more_body", False):
        if scope["type"] == "http":
            record_request(scope)


def _settings_from_env() -> Settings:
    return load_settings(environment_with_dotenv())


def create_app(settings: Settings | None = None, engines: Engines | None = None) -> Litestar:
    """Build the app; engines are loaded in the lifespan unless given (tests, benchmarks)."""
    settings = settings or _settings_from_env()
    configure_logging(settings.server.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            db = open_db(settings.data.database_url.reveal(), pool_size=settings.data.db_pool_size)
            stack.push_async_callback(db.dispose)
            redis = aioredis.from_url(
                settings.data.redis_url.reveal(),
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                max_connections=256,
            )
            stack.push_async_callback(redis.aclose)
            loaded = engines
            if loaded is None:
                loaded = await stack.enter_async_context(open_engines(settings.engines))
            keys = KeyService(
                db,
                pepper=settings.security.key_pepper.reveal(),
                previous_pepper=settings.security.key_pepper_previous.reveal(),
                cache_seconds=settings.security.key_cache_seconds,
            )
            recorder = UsageRecorder(
                db,
                flush_interval=settings.usage.flush_interval_seconds,
                batch_size=settings.usage.batch_size,
                after_flush=keys.flush_last_used,
            )
            recorder.start()
            stack.push_async_callback(recorder.stop)
            app.state.services = Services(
                settings=settings,
                db=db,
                redis=redis,
                keys=keys,
                limiter=RedisLimiter(
                    redis,
                    enabled=settings.limits.enabled,
                    fail_open=settings.limits.fail_open,
                    concurrency_retry_after=settings.limits.concurrency_retry_after_seconds,
                ),
                usage=recorder,
                engines=loaded,
                metrics=metrics_registry,
            )
            log.info("lexia %s ready (engines: %s)", VERSION, loaded.mode)
            yield

    metrics_registry = Metrics(per_key=settings.server.metrics_per_key)
    origins = list(settings.server.cors_origins)
    docs = [openapi_document] if settings.server.docs_enabled else []
    return LexiaApp(
        route_handlers=[
            *docs,
            root,
            health,
            ready,
            metrics,
            list_models,
            get_model,
            usage,
            KeyController,
            TenantController,
        ],
        lifespan=[lifespan],
        middleware=[DefineMiddleware(AuthMiddleware)],
        before_send=[observe],
        exception_handlers={Exception: handle_exception},
        openapi_config=(
            OpenAPIConfig(
                title="Lexia",
                version=VERSION,
                path="/docs",
                render_plugins=[SwaggerRenderPlugin(path="/")],
            )
            if settings.server.docs_enabled
            else None
        ),
        cors_config=(
            CORSConfig(allow_origins=origins, allow_credentials="*" not in origins)
            if origins
            else None
        ),
        request_max_body_size=None,
        debug=False,
    )
