"""Webhooks (API.md §7.2, §7.4): the signing secret (scope admin) and the delivery log (scope jobs)."""

from __future__ import annotations

from litestar import Controller, get, post

from lexia.api.errors import documented
from lexia.api.params import AfterDelivery, DeliveryStatusFilter, Limit
from lexia.api.security import secured
from lexia.schemas.common import Page
from lexia.schemas.webhooks import WebhookDelivery, WebhookSecret
from lexia.services.access.keys import ApiKey
from lexia.services.webhooks.deliveries import DeliveryLog
from lexia.services.webhooks.signing import SecretStore


class WebhookController(Controller):
    """/v1/webhooks."""

    path = "/v1/webhooks"

    @get("/secret", opt=secured("admin"), responses=documented())
    async def get_secret(self, caller: ApiKey, secrets: SecretStore) -> WebhookSecret:
        """The tenant's signing secret (created on first use)."""
        return await secrets.get(caller.tenant_id)

    @post("/secret/rotate", status_code=200, opt=secured("admin"), responses=documented())
    async def rotate_secret(self, caller: ApiKey, secrets: SecretStore) -> WebhookSecret:
        """A new signing secret; the previous one keeps signing during the grace period."""
        return await secrets.rotate(caller.tenant_id)

    @get("/deliveries", opt=secured("jobs"), responses=documented(422))
    async def list_deliveries(
        self, *, caller: ApiKey, deliveries: DeliveryLog, resource_id: str | None = None,
        status: DeliveryStatusFilter = None, limit: Limit = 20, after: AfterDelivery = None,
    ) -> Page[WebhookDelivery]:
        """The tenant's deliveries, newest first; filters `resource_id` and `status`."""
        return await deliveries.page(
            caller.tenant_id, resource_id=resource_id or None, status=status, limit=limit, after=after
        )

    @get("/deliveries/{delivery_id:str}", opt=secured("jobs"), responses=documented(404))
    async def get_delivery(self, delivery_id: str, caller: ApiKey, deliveries: DeliveryLog) -> WebhookDelivery:
        """One delivery with every attempt."""
        return await deliveries.get(caller.tenant_id, delivery_id)

    @post(
        "/deliveries/{delivery_id:str}/redeliver", status_code=202, opt=secured("jobs"), responses=documented(404, 409)
    )
    async def redeliver(self, delivery_id: str, caller: ApiKey, deliveries: DeliveryLog) -> WebhookDelivery:
        """One extra immediate attempt (same webhook-id, fresh timestamp and signature)."""
        return await deliveries.redeliver(caller.tenant_id, delivery_id)
