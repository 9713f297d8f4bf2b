"""Authentication, scope check and rate limiting, run after routing for every /v1 route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from lexia.api.deps import KEY_STATE, LIMITS_STATE, RL_HEADERS_STATE, Services
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


class AuthMiddleware:
    """ASGI middleware: 401 → 403 → 429 in the order of API.md §1.2."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opt: dict[str, Any] = scope["route_handler"].opt if scope["type"] == ScopeType.HTTP else PUBLIC
        if opt.get("public") or "meters" not in opt:
            await self.app(scope, receive, send)
            return
        services: Services = scope["litestar_app"].state.services
        key = await services.keys.authenticate(presented_key(scope["headers"]))
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
        try:
            decision = await services.limiter.admit(key.id, limits, opt["meters"])
        except RateLimited as exc:
            # The error response carries the X-RateLimit-* headers and Retry-After itself.
            services.metrics.rate_limited.labels(exc.code).inc()
            raise
        state[RL_HEADERS_STATE] = decision.headers()
        await self.app(scope, receive, send)
