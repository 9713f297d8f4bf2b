"""Dependency injection: the app's services by name (Litestar `Provide`), the caller, request state.

The services are built once in the lifespan (`lexia.services.wiring.build_services`) and bound
to each request by `LexiaApp`, so a provider is one attribute read. Handlers name what they use
(`keys: KeyService`, `jobs: JobStore`, `caller: ApiKey` …) and never reach for the app state.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from litestar import Request
from litestar.di import Provide

from lexia.api.requestid import request_id
from lexia.services.access.keys import ApiKey
from lexia.services.wiring import Services

KEY_STATE = "lexia.key"
LIMITS_STATE = "lexia.limits"
USAGE_STATE = "lexia.usage"
RL_HEADERS_STATE = "lexia.rl_headers"

_CURRENT: ContextVar[Services] = ContextVar("lexia.services")
_CALLER: ContextVar[ApiKey] = ContextVar("lexia.caller")


def bind_services(svc: Services) -> None:
    """Make `svc` the current request's Services (LexiaApp does it as each request starts)."""
    _CURRENT.set(svc)


def current_services() -> Services:
    """The Services of the app serving the current request.

    Also how parameterless hot handlers (`GET /v1/models`) reach them: a handler without
    parameters skips Litestar's per-request signature parsing, which `make bench` shows.
    """
    return _CURRENT.get()


def caller(request: Request[Any, Any, Any]) -> ApiKey:
    """The authenticated key (set by the auth hook)."""
    return request.scope["state"][KEY_STATE]  # type: ignore[no-any-return]


def bind_caller(key: ApiKey) -> None:
    """Make `key` the current request's caller (the auth hook does it once the key is checked)."""
    _CALLER.set(key)


def current_caller() -> ApiKey:
    """The current request's authenticated key, for the DI-free hot GETs (like current_services)."""
    return _CALLER.get()


def caller_limits(request: Request[Any, Any, Any]) -> dict[str, int]:
    """The caller's effective limits."""
    return request.scope["state"][LIMITS_STATE]  # type: ignore[no-any-return]


def rid(request: Request[Any, Any, Any]) -> str:
    """This request's id."""
    return request_id(request.scope)


def note_usage(request: Request[Any, Any, Any], **fields: Any) -> None:
    """Attach metered amounts (kind, tokens, audio seconds) to this request's usage event."""
    request.scope["state"].setdefault(USAGE_STATE, {}).update(fields)


def add_headers(request: Request[Any, Any, Any], headers: dict[str, str]) -> None:
    """Headers added to this request's response, errors included (like the X-RateLimit-* ones)."""
    request.scope["state"].setdefault(RL_HEADERS_STATE, {}).update(headers)


def jobs_headers(request: Request[Any, Any, Any], limits: dict[str, int], held: int | None) -> None:
    """X-RateLimit-Limit-Jobs / -Remaining-Jobs once a concurrency slot is held."""
    if held is not None:
        limit = limits["max_concurrent_jobs"]
        remaining = max(0, limit - held) if limit > 0 else 0
        add_headers(request, {"X-RateLimit-Limit-Jobs": str(limit), "X-RateLimit-Remaining-Jobs": str(remaining)})


def _service(name: str) -> Callable[[], Any]:
    def provide() -> Any:
        return getattr(_CURRENT.get(), name)

    provide.__name__ = f"provide_{name}"
    return provide


# Service name -> provider; a handler parameter of that name receives it.
SERVICE_NAMES = (
    "settings", "engines", "metrics", "keys", "tenants", "limiter", "usage_reports", "llm", "jobs", "lifecycle",
    "sync_jobs", "submissions", "retention", "deliveries", "secrets", "pod", "health", "intake", "audio_calls",
)
DEPENDENCIES: dict[str, Provide] = {
    "services": Provide(current_services, sync_to_thread=False),
    **{name: Provide(_service(name), sync_to_thread=False) for name in SERVICE_NAMES},
    "caller": Provide(caller, sync_to_thread=False),
    "limits": Provide(caller_limits, sync_to_thread=False),
    "request_id": Provide(rid, sync_to_thread=False),
}
