"""Per-request bookkeeping in a before_send hook: request id, rate-limit headers, metrics, usage."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from litestar.enums import ScopeType
from litestar.types import Message, Scope

from lexia.api.deps import KEY_STATE, RL_HEADERS_STATE, USAGE_STATE, Services
from lexia.api.requestid import request_id
from lexia.services.usage import UsageEvent

T0_STATE = "lexia.t0"
DONE_STATE = "lexia.done"
STATUS_STATE = "lexia.status"


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
    method = str(scope.get("method", ""))
    svc.metrics.observe_request(route, method, code, elapsed)
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
            method=method,
            status=code,
            latency_ms=round(elapsed * 1000.0, 3),
            **metered,
        )
    )


async def observe(message: Message, scope: Scope) -> None:
    """before_send hook: request id and rate-limit headers, then metrics and usage at the end."""
    if message["type"] == "http.response.start":
        # Our header names are never set by handlers, so appending is safe and cheap.
        state = scope["state"]
        extra = [(b"x-request-id", request_id(scope).encode())]
        for name, value in (state.get(RL_HEADERS_STATE) or {}).items():
            extra.append((name.lower().encode(), value.encode()))
        message["headers"] = [*message.get("headers", ()), *extra]
        state[STATUS_STATE] = message["status"]
    elif (
        message["type"] == "http.response.body"
        and not message.get("more_body", False)
        and scope["type"] == ScopeType.HTTP
    ):
        record_request(scope)


