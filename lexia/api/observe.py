"""Per-request bookkeeping around `send`: request id, rate-limit headers, metrics, usage."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from litestar.types import Scope, Send

from lexia.api.deps import KEY_STATE, RL_HEADERS_STATE, USAGE_STATE, current_services
from lexia.api.requestid import request_id
from lexia.services.access.usage import UsageEvent
from lexia.services.wiring import Services

T0_STATE = "lexia.t0"
DONE_STATE = "lexia.done"
STATUS_STATE = "lexia.status"


def record_request(scope: Scope, status: int | None = None, svc: Services | None = None) -> None:
    """Metrics and the usage event of a finished request; runs once per request."""
    state = scope["state"]
    if state.get(DONE_STATE):
        return
    state[DONE_STATE] = True
    if svc is None:
        svc = current_services()
    elapsed = time.perf_counter() - state.get(T0_STATE, time.perf_counter())
    code = status or state.get(STATUS_STATE, 500)
    route = scope.get("path_template") or "unmatched"
    method = str(scope.get("method", ""))
    svc.metrics.observe_request(route, method, code, elapsed)
    key = state.get(KEY_STATE)
    if key is None:
        return
    if svc.metrics.per_key:
        svc.metrics.key_requests.labels(key.id).inc()
    metered: dict[str, Any] | None = state.get(USAGE_STATE)
    latency_ms = round(elapsed * 1000.0, 3)
    if not metered:
        slot = (int(time.time()), key.tenant_id, key.id, route, method, code)
        svc.usage.record_unmetered(slot, latency_ms, request_id(scope))
        return
    svc.usage.record(
        UsageEvent(
            created_at=datetime.now(UTC),
            tenant_id=key.tenant_id,
            key_id=key.id,
            request_id=request_id(scope),
            route=route,
            method=method,
            status=code,
            latency_ms=latency_ms,
            **metered,
        )
    )


_HEADER_NAMES: dict[str, bytes] = {}


def _header_name(name: str) -> bytes:
    """The lower-case wire form of a header name (the few we add, encoded once)."""
    encoded = _HEADER_NAMES.get(name)
    if encoded is None:
        encoded = _HEADER_NAMES[name] = name.lower().encode("latin-1")
    return encoded


def observed_send(scope: Scope, send: Send, svc: Services) -> Send:
    """Wrap `send`: headers on the response start, metrics and usage with the last body part."""

    def wrapped(message: Any) -> Awaitable[None]:
        # A plain function handing back the server's awaitable: no extra coroutine per message.
        kind = message["type"]
        if kind == "http.response.start":
            # Our header names are never set by handlers, so appending is safe and cheap.
            state = scope["state"]
            headers = list(message.get("headers", ()))
            headers.append((b"x-request-id", request_id(scope).encode()))
            limits: dict[str, str] | None = state.get(RL_HEADERS_STATE)
            if limits:
                headers += [(_header_name(name), value.encode()) for name, value in limits.items()]
            message["headers"] = headers
            state[STATUS_STATE] = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            # The response is complete once this last part is handed to the server.
            record_request(scope, svc=svc)
        return send(message)

    return wrapped
