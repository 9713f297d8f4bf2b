"""GET /v1/usage (scope usage): sums of the usage ledger per day, key and kind."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from lexia.api.deps import caller, services
from lexia.api.security import route_opt
from lexia.services.usage import parse_usage_query, summarize


@get("/v1/usage", opt=route_opt("usage"))
async def usage(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Usage of the calling key (or key_id, or all keys of the tenant)."""
    me = caller(request)
    params = request.query_params
    query = parse_usage_query(
        start=params.get("start"),
        end=params.get("end"),
        kind=params.get("kind"),
        key_id=params.get("key_id"),
        caller_key=me.id,
    )
    return await summarize(services(request).db, me.tenant_id, query)
