"""Webhook signing (API.md §7.2): per-tenant secrets with a rotation grace period, Standard Webhooks signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import timedelta

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db.rows import SecretRow
from lexia.db.webhooks import SecretTable
from lexia.schemas.common import iso
from lexia.schemas.webhooks import WebhookSecret

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a secret)


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")>` (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(signing: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Space-separated signatures, newest secret first (two during a rotation's grace period)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in signing)


class SecretStore:
    """Per-tenant signing secrets, created on first use and rotated with a grace period."""

    def __init__(self, table: SecretTable, *, grace_hours: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._table = table
        self._grace = timedelta(hours=grace_hours)
        self._clock = clock

    def _view(self, row: SecretRow) -> WebhookSecret:
        """The webhook_secret object: the only place the secret is shown."""
        previous = row.previous_expires_at if row.previous_secret and row.previous_expires_at else None
        return WebhookSecret(
            secret=row.secret,
            created_at=iso(row.created_at) or "",
            previous_expires_at=iso(previous) if previous is not None and previous > self._clock.now() else None,
        )

    async def get(self, tenant_id: str) -> WebhookSecret:
        """The tenant's secret (created if it has none yet)."""
        return self._view(await self._table.get_or_create(tenant_id, new_secret(), self._clock.now()))

    async def rotate(self, tenant_id: str) -> WebhookSecret:
        """A new secret; the old one keeps signing alongside it for the grace period."""
        now = self._clock.now()
        return self._view(await self._table.rotate(tenant_id, new_secret(), now, now + self._grace))

    async def signing(self, tenant_id: str) -> list[str]:
        """Secrets that sign now: the current one, then the previous one during its grace period."""
        now = self._clock.now()
        row = await self._table.get_or_create(tenant_id, new_secret(), now)
        out = [row.secret]
        if row.previous_secret and row.previous_expires_at and row.previous_expires_at > now:
            out.append(row.previous_secret)
        return out
