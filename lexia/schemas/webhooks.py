"""Webhook signing secrets and the delivery log (API.md §7.2, §7.4)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class WebhookSecret(msgspec.Struct, kw_only=True):
    """The tenant's signing secret (the only place it is shown)."""

    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str
    created_at: str
    previous_expires_at: str | None


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    """One POST of a delivery."""

    number: int
    at: str | None
    status_code: int | None
    latency_ms: int | None
    error: str | None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    """A webhook delivery with every attempt; `payload` is the event body exactly as signed."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    resource_id: str
    event: str
    url: str
    status: str
    payload: dict[str, Any]
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None
    created_at: str
