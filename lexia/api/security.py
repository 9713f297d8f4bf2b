"""Authentication, scope and rate limit for every route: fail closed unless a route is marked public.

Each route declares in its `opt` either `public(...)` or `secured(scope, *meters)`. The app's
`before_request` hook authenticates every other route, so a route that declares nothing is
refused (403), never served; `tests/test_route_auth.py` walks the route table so none ships that way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request

from lexia.api.deps import KEY_STATE, LIMITS_STATE, RL_HEADERS_STATE, bind_caller, current_services
from lexia.api.requestid import request_id
from lexia.errors import AuthenticationFailed, PermissionDenied, RateLimited, ValidationFailed
from lexia.logs import current_request_id

PUBLIC_OPT = "public"
SCOPE_OPT = "scope"
METERS_OPT = "meters"
ANY_KEY = "any"  # the scope of routes any valid key may call (the model list)
UNDECLARED = "undeclared"  # no key holds it: an undeclared route refuses everyone


def public() -> dict[str, Any]:
    """Route options of a route that needs no key (/, /health, /ready, /metrics, docs)."""
    return {PUBLIC_OPT: True}


def secured(scope_name: str, *meters: str) -> dict[str, Any]:
    """Route options: the scope a route requires (ANY_KEY = any valid key) and its extra meters."""
    return {SCOPE_OPT: scope_name, METERS_OPT: ("requests", *meters)}


def declared(opt: dict[str, Any]) -> bool:
    """True when a route says it is public or names its scope."""
    return bool(opt.get(PUBLIC_OPT)) or SCOPE_OPT in opt


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
            raise AuthenticationFailed("No API key provided: send Authorization: Bearer lx_…", code="missing_api_key")
        return text
    if api_key is not None and api_key.strip():
        return api_key.decode("latin-1").strip()
    raise AuthenticationFailed("No API key provided: send Authorization: Bearer lx_…", code="missing_api_key")


async def authorize(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request` hook: 401 → 403 → 429 in the order of API.md §1.2.

    It runs after routing (so unknown routes and methods answer 404/405 first) and before any
    parameter or body parsing. As a hook rather than route middleware it adds no ASGI layer
    (route middleware would also make Litestar wrap every route in a second exception handler).
    OPTIONS requests (CORS preflights, Allow) carry no data and need no key.
    """
    scope = request.scope
    opt: dict[str, Any] = scope["route_handler"].opt
    if opt.get(PUBLIC_OPT) or scope["method"] == "OPTIONS":
        return
    services = current_services()
    presented = presented_key(scope["headers"])
    # The cached and leased answers need no await (no coroutine to create and run).
    key = services.keys.authenticate_cached(presented) or await services.keys.authenticate(presented)
    state = scope["state"]
    state[KEY_STATE] = key
    bind_caller(key)
    current_request_id.set(request_id(scope))
    required = opt.get(SCOPE_OPT, UNDECLARED)
    if required == UNDECLARED:
        raise PermissionDenied("This route declares no scope, so no key may call it")
    if required != ANY_KEY and not key.allows(required):
        raise PermissionDenied(f"This API key lacks the scope '{required}' required by this route")
    limits = services.limits_of(key)
    state[LIMITS_STATE] = limits
    meters = opt.get(METERS_OPT, ("requests",))
    try:
        decision = services.limiter.admit_from_lease(key.id, limits, meters) or await services.limiter.admit(
            key.id, limits, meters
        )
    except RateLimited as exc:
        # The error response carries the X-RateLimit-* headers and Retry-After itself.
        services.metrics.rate_limited.labels(exc.code).inc()
        raise
    state[RL_HEADERS_STATE] = decision.headers()
    if b"%00" in scope["query_string"]:
        reject_nul_query(scope)


def reject_nul_query(scope: Any) -> None:
    """422 naming the query parameter that holds a NUL character (PostgreSQL cannot store one).

    Path ids need no such check: every id route checks the id's form before any query (a malformed
    id is a 404, API.md §1.3)."""
    for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            raise ValidationFailed(f"{name} must not contain NUL characters", param=name.replace("\x00", ""))
