"""Shared request-time plumbing: the app's services, the caller's key, body and list parsing."""

from __future__ import annotations

import os
import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from litestar import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.api.errors import is_unknown_field, msgspec_message, msgspec_param
from lexia.engines.base import Engines
from lexia.errors import InvalidJSON, PayloadTooLarge, UnknownParameter, UnsupportedMediaType, ValidationFailed
from lexia.ids import is_id
from lexia.metrics import Metrics
from lexia.services.deliveries import DeliveryLog
from lexia.services.execution import JobRunner
from lexia.services.jobs import JobQueue
from lexia.services.keys import ApiKey, KeyService, with_limits
from lexia.services.lifecycle import Lifecycle
from lexia.services.limits import RedisLimiter
from lexia.services.podmetrics import PodMetrics
from lexia.services.retention import Retention
from lexia.services.submission import Submitter
from lexia.services.usage import UsageRecorder
from lexia.services.webhooks import SecretStore
from lexia.settings import Settings

T = TypeVar("T")

KEY_STATE = "lexia.key"
LIMITS_STATE = "lexia.limits"
USAGE_STATE = "lexia.usage"
RL_HEADERS_STATE = "lexia.rl_headers"


@dataclass
class Services:
    """Everything a handler may need, built once in the lifespan."""

    settings: Settings
    db: AsyncEngine
    redis: aioredis.Redis
    keys: KeyService
    limiter: RedisLimiter
    usage: UsageRecorder
    engines: Engines
    metrics: Metrics
    queue: JobQueue | None = None
    started_at: float = field(default_factory=time.time)
    _limits: dict[str, tuple[ApiKey, dict[str, int]]] = field(default_factory=dict)
    _jobs: JobServices | None = None
    _pod: PodMetrics | None = None

    @property
    def pod(self) -> PodMetrics:
        """Pod-wide job-duration and webhook-attempt metrics in Redis (built on first use)."""
        if self._pod is None:
            self._pod = PodMetrics(self.redis)
        return self._pod

    @property
    def jobs(self) -> JobServices:
        """The job services of this process (built on first use)."""
        if self._jobs is None:
            self._jobs = JobServices.build(self)
        return self._jobs

    def limits_of(self, key: ApiKey) -> dict[str, int]:
        """The key's effective limits, computed once per cached key object."""
        cached = self._limits.get(key.id)
        if cached is not None and cached[0] is key:
            return cached[1]
        defaults = self.settings.limits
        limits = with_limits(
            key,
            {
                "requests_per_minute": defaults.requests_per_minute,
                "tokens_per_minute": defaults.tokens_per_minute,
                "audio_seconds_per_hour": defaults.audio_seconds_per_hour,
                "max_concurrent_jobs": defaults.max_concurrent_jobs,
            },
        )
        if len(self._limits) > 100_000:
            self._limits.clear()
        self._limits[key.id] = (key, limits)
        return limits


@dataclass
class JobServices:
    """Submission, transitions, deletion, the delivery log and sync runs of one API process."""

    submitter: Submitter
    lifecycle: Lifecycle
    retention: Retention
    runner: JobRunner
    deliveries: DeliveryLog
    secrets: SecretStore

    @classmethod
    def build(cls, svc: Services) -> JobServices:
        """Assemble from the app's services."""
        settings = svc.settings
        queue: JobQueue = svc.queue if svc.queue is not None else _NoQueue()
        name = f"api:{socket.gethostname()}:{os.getpid()}"
        lifecycle = Lifecycle(
            svc.db, queue, svc.limiter, lease_seconds=settings.jobs.lease_seconds,
            max_attempts=settings.jobs.max_attempts, pod=svc.pod,
        )
        return cls(
            submitter=Submitter(svc.db, svc.redis, svc.queue, svc.limiter, settings, worker=name),
            lifecycle=lifecycle,
            retention=Retention(lifecycle),
            runner=JobRunner(lifecycle, svc.engines, settings, worker=name),
            deliveries=DeliveryLog(svc.db),
            secrets=SecretStore(svc.db),
        )


class _NoQueue:
    """Without a broker nothing is sent; the worker's sweeper enqueues what it finds."""

    async def enqueue(self, actor: str, item_id: str, *, delay: float | None = None) -> None:
        raise ConnectionError("no job queue configured")


_CURRENT: ContextVar[Services] = ContextVar("lexia.services")


def bind_services(svc: Services) -> None:
    """Make `svc` the current request's Services (LexiaApp does it as each request starts)."""
    _CURRENT.set(svc)


def current_services() -> Services:
    """The Services of the app serving the current request, without a `request` parameter.

    Handlers that take no parameters skip Litestar's per-request signature parsing; this is
    how such hot, parameterless routes reach the app's services.
    """
    return _CURRENT.get()


def services(request: Request[Any, Any, Any]) -> Services:
    """The Services of the app serving this request."""
    return request.app.state.services  # type: ignore[no-any-return]


def caller(request: Request[Any, Any, Any]) -> ApiKey:
    """The authenticated key (set by the auth middleware)."""
    return request.scope["state"][KEY_STATE]  # type: ignore[no-any-return]


def caller_limits(request: Request[Any, Any, Any]) -> dict[str, int]:
    """The caller's effective limits."""
    return request.scope["state"][LIMITS_STATE]  # type: ignore[no-any-return]


def note_usage(request: Request[Any, Any, Any], **fields: Any) -> None:
    """Attach metered amounts (kind, tokens, audio seconds) to this request's usage event."""
    request.scope["state"].setdefault(USAGE_STATE, {}).update(fields)


async def decode_json(request: Request[Any, Any, Any], kind: type[T]) -> T:
    """Read a JSON body into a msgspec type with OpenAI-style 400/413/415/422 errors."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "Content-Type must be application/json", param=None, code="unsupported_content_type"
        )
    limit = services(request).settings.server.max_json_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The JSON body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The JSON body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidJSON("The request body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ValidationFailed("The request body must be a JSON object")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        kind_ = UnknownParameter if is_unknown_field(text) else ValidationFailed
        raise kind_(msgspec_message(text), param=msgspec_param(text)) from None


@dataclass(frozen=True, slots=True)
class Page:
    """Validated §1.5 pagination parameters."""

    limit: int
    after: str | None


def page_params(request: Request[Any, Any, Any], prefix: str) -> Page:
    """Parse `limit` (1..100, default 20) and `after` (an id of the listed type)."""
    raw_limit = request.query_params.get("limit")
    limit = 20
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise ValidationFailed("limit must be an integer from 1 to 100", param="limit")
        limit = int(raw_limit)
    after = request.query_params.get("after") or None
    if after is not None and not is_id(after, prefix):
        raise ValidationFailed(f"after must be an id starting with {prefix}_", param="after")
    return Page(limit, after)


def bool_param(request: Request[Any, Any, Any], name: str, default: bool) -> bool:
    """Parse a boolean query parameter (true|false|1|0)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValidationFailed(f"{name} must be true or false", param=name)


def list_body(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The OpenAI list object."""
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
