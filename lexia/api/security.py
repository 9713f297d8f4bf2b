"""Authentication, scope check and rate limiting, run after routing for every /v1 route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Request

from lexia.api.deps import KEY_STATE, LIMITS_STATE, RL_HEADERS_STATE, current_services
from lexia.api.requestid import request_id
from lexia.errors import AuthenticationFailed, PermissionDenied, RateLimited
from lexia.logs import current_request_id

PUBLIC: dict[str, Any] = {"public": True}


def route_opt(scope_name: str | None = None, *meters: str) -> dict[str, Any]:
    """Route options: the scope a route requires (None = any valid key) and extra meters."""
    return {"scope": scope_name, "meters": ("requests", *meters)}


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The key from Authorization (Bearer or bare) or x-api-key; Authorization wins."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"x-api-key":
            api_key = value
    if authorization is not None:
        text = authorization.decode("latin-1").strip()
        scheme, _, rest = text.partition(" ")
        if scheme.lower() == "bearer":
            text = rest.strip()
        if not text:
            raise AuthenticationFailed(
                "No API key provided: send Authorization: Bearer lx_…", code="missing_api_key"
            )
        return text
    if api_key is not None and api_key.strip():
        return api_key.decode("latin-1").strip()
    raise AuthenticationFailed(
        "No API key provided: send Authorization: Bearer lx_…", code="missing_api_key"
    )


async def authorize(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request` hook: 401 → 403 → 429 in the order of API.md §1.2.

    It runs after routing (so unknown routes and methods answer 404/405 first) and before any
    parameter or body parsing. As a hook rather than route middleware it adds no ASGI layer
    (route middleware would also make Litestar wrap every route in a second exception handler).
    """
    scope = request.scope
    opt: dict[str, Any] = scope["route_handler"].opt
    if "meters" not in opt:
        return
    services = current_services()
    presented = presented_key(scope["headers"])
    # The cached and leased answers need no await (no coroutine to create and run).
    key = services.keys.authenticate_cached(presented) or await services.keys.authenticate(presented)
    state = scope["state"]
    state[KEY_STATE] = key
    current_request_id.set(request_id(scope))
    required = opt["scope"]
    if required is not None and not key.allows(required):
        raise PermissionDenied(
            f"This API key lacks the scope '{required}' required by this route"
        )
    limits = services.limits_of(key)
    state[LIMITS_STATE] = limits
    meters = opt["meters"]
    try:
        decision = services.limiter.admit_from_lease(key.id, limits, meters) or await services.limiter.admit(
            key.id, limits, meters
        )
    except RateLimited as exc:
        # The error response carries the X-RateLimit-* headers and Retry-After itself.
        services.metrics.rate_limited.labels(exc.code).inc()
        raise
    state[RL_HEADERS_STATE] = decision.headers()
