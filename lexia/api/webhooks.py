"""Webhook routes: the signing secret (scope admin) and the delivery log (scope jobs), §7.2 and §7.4."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from lexia.api.deps import caller, list_body, page_params, services
from lexia.api.security import route_opt
from lexia.services.deliveries import DELIVERY_STATUSES, delivery_object
from lexia.services.jobs import kind_of, parse_filter
from lexia.services.webhooks import secret_object

Req = Request[Any, Any, Any]


@get("/v1/webhooks/secret", opt=route_opt("admin"))
async def get_secret(request: Req) -> dict[str, Any]:
    """The tenant's signing secret (created on first use)."""
    row = await services(request).jobs.secrets.get(caller(request).tenant_id)
    return secret_object(row)


@post("/v1/webhooks/secret/rotate", opt=route_opt("admin"), status_code=200)
async def rotate_secret(request: Req) -> dict[str, Any]:
    """A new signing secret; the previous one keeps signing during the grace period."""
    svc = services(request)
    row = await svc.jobs.secrets.rotate(caller(request).tenant_id, svc.settings.webhooks.secret_grace_hours)
    return secret_object(row)


@get("/v1/webhooks/deliveries", opt=route_opt("jobs"))
async def list_deliveries(request: Req) -> dict[str, Any]:
    """The tenant's deliveries, newest first; filters `resource_id` and `status`."""
    page = page_params(request, "whd")
    status = parse_filter(request.query_params.get("status"), DELIVERY_STATUSES, "status")
    resource_id = request.query_params.get("resource_id") or None
    if resource_id is not None and kind_of(resource_id) is None:
        return list_body([], False)  # no resource has such an id
    rows, more = await services(request).jobs.deliveries.list(
        caller(request).tenant_id, resource_id=resource_id, status=status, limit=page.limit, after=page.after
    )
    return list_body([delivery_object(r) for r in rows], more)


@get("/v1/webhooks/deliveries/{delivery_id:str}", opt=route_opt("jobs"))
async def get_delivery(request: Req) -> dict[str, Any]:
    """One delivery with every attempt."""
    delivery_id = request.path_params["delivery_id"]
    row = await services(request).jobs.deliveries.get(caller(request).tenant_id, delivery_id)
    return delivery_object(row)


@post("/v1/webhooks/deliveries/{delivery_id:str}/redeliver", opt=route_opt("jobs"), status_code=202)
async def redeliver(request: Req) -> Response[Any]:
    """One extra immediate attempt (same webhook-id, fresh timestamp and signature)."""
    delivery_id = request.path_params["delivery_id"]
    svc = services(request)
    row = await svc.jobs.deliveries.redeliver(caller(request).tenant_id, delivery_id, svc.jobs.lifecycle.queue)
    return Response(delivery_object(row), status_code=202)
