"""Webhooks (API.md §7.1, §7.2): signing secrets, Standard Webhooks signatures, events, the delivery row.

One delivery row per resource and terminal event (a unique index), written in the same statement
as the terminal state (lexia.services.lifecycle); lexia.services.deliveries makes the attempts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import webhook_deliveries, webhook_secrets
from lexia.errors import ValidationFailed
from lexia.ids import new_id
from lexia.netguard import NetGuard, ResolveError
from lexia.schemas.lexia import iso
from lexia.services.jobs import NOUN, result_url

log = logging.getLogger("lexia.webhooks")

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a secret)
MAX_AUTH_VALUE = 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})


# -- secrets and signatures -----------------------------------------------------------------


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


def secret_object(row: Any, now: datetime | None = None) -> dict[str, Any]:
    """The webhook_secret object (§7.2); the only place the secret is shown."""
    moment = now or datetime.now(UTC)
    previous = row.previous_expires_at if row.previous_secret and row.previous_expires_at else None
    return {
        "object": "webhook_secret",
        "secret": row.secret,
        "created_at": iso(row.created_at),
        "previous_expires_at": iso(previous) if previous is not None and previous > moment else None,
    }


class SecretStore:
    """Per-tenant signing secrets, created on first use and rotated with a grace period."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get(self, tenant_id: str) -> Any:
        """The tenant's secret row, created if it has none yet."""
        async with self._db.begin() as conn:
            await conn.execute(
                pg_insert(webhook_secrets)
                .values(tenant_id=tenant_id, secret=new_secret(), created_at=datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=["tenant_id"])
            )
            return (
                await conn.execute(sa.select(webhook_secrets).where(webhook_secrets.c.tenant_id == tenant_id))
            ).one()

    async def rotate(self, tenant_id: str, grace_hours: float) -> Any:
        """A new secret; the old one keeps signing alongside it for `grace_hours`."""
        now = datetime.now(UTC)
        insert = pg_insert(webhook_secrets).values(
            tenant_id=tenant_id, secret=new_secret(), created_at=now
        )
        stmt = insert.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "previous_secret": webhook_secrets.c.secret,
                "previous_expires_at": now + timedelta(hours=grace_hours),
                "secret": insert.excluded.secret,
                "created_at": insert.excluded.created_at,
            },
        ).returning(webhook_secrets)
        async with self._db.begin() as conn:
            return (await conn.execute(stmt)).one()

    async def signing(self, tenant_id: str) -> list[str]:
        """Secrets that sign now: the current one, then the previous one during its grace period."""
        row = await self.get(tenant_id)
        out = [row.secret]
        if row.previous_secret and row.previous_expires_at and row.previous_expires_at > datetime.now(UTC):
            out.append(row.previous_secret)
        return out


# -- request fields -------------------------------------------------------------------------


async def check_webhook(
    guard: NetGuard, url: str | None, header_name: str | None, header_value: str | None
) -> None:
    """§4.3 webhook fields: URL vetted by the SSRF guard; the auth header both-or-neither, a token."""
    if (header_name is None) != (header_value is None):
        raise ValidationFailed(
            "webhook_auth_header_name and webhook_auth_header_value go together", param="webhook_auth_header_name"
        )
    if header_name is not None:
        lowered = header_name.lower()
        if (
            not _TOKEN.match(header_name)
            or lowered in _HOP_BY_HOP
            or lowered.startswith(("content-", "webhook-"))
        ):
            raise ValidationFailed(
                "webhook_auth_header_name must be a header name other than Host, Content-* or webhook-*",
                param="webhook_auth_header_name",
            )
    if header_value is not None and (
        len(header_value) > MAX_AUTH_VALUE or any(c in header_value for c in "\r\n\0")
    ):
        raise ValidationFailed(
            f"webhook_auth_header_value must be at most {MAX_AUTH_VALUE} characters on one line",
            param="webhook_auth_header_value",
        )
    if url is not None:
        with contextlib.suppress(ResolveError):  # may resolve later; every attempt is vetted and logged
            await guard.vet(url, param="webhook_url")
    elif header_name is not None:
        raise ValidationFailed("webhook_auth_header_name needs a webhook_url", param="webhook_url")


# -- events ---------------------------------------------------------------------------------


def event_payload(row: Any, status: str, error: dict[str, str] | None, at: datetime) -> dict[str, Any]:
    """The thin §7.1 body of a terminal event."""
    noun = NOUN[row.kind]
    return {
        "type": f"{noun}.{status}",
        f"{noun}_id": row.id,
        "job_id": row.id,
        "kind": row.kind,
        "status": status,
        "error": error,
        "result_url": result_url(row),
        "metadata": row.metadata,
        "timestamp": iso(at),
    }


_ORDER = ("type", "transcript_id", "diarization_id", "job_id", "kind", "status", "error", "result_url", "metadata",
          "timestamp")


def ordered_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload in its documented field order (jsonb does not keep key order)."""
    out = {k: payload[k] for k in _ORDER if k in payload}
    if isinstance(out.get("error"), dict):
        out["error"] = {"code": out["error"].get("code"), "message": out["error"].get("message")}
    out.update({k: v for k, v in payload.items() if k not in out})
    return out


def delivery_insert(done: Any, snapshot: Any, status: str, error: dict[str, str] | None, at: datetime) -> Any:
    """A CTE inserting the delivery of this terminal event for the row in `done`; None without a webhook."""
    if not snapshot.webhook_url:
        return None
    payload = event_payload(snapshot, status, error, at)
    source = sa.select(
        sa.literal(new_id("whd")),
        done.c.tenant_id,
        done.c.id,
        sa.literal(payload["type"]),
        done.c.webhook_url,
        sa.literal("pending"),
        sa.literal(payload, JSONB),
        sa.literal([], JSONB),
        sa.literal(at, sa.DateTime(timezone=True)),
        sa.literal(at, sa.DateTime(timezone=True)),
        sa.literal(False),
    ).where(done.c.webhook_url.is_not(None))
    columns = ["id", "tenant_id", "resource_id", "event", "url", "status", "payload", "attempts", "next_attempt_at",
               "created_at", "manual"]
    return (
        pg_insert(webhook_deliveries)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["resource_id", "event"])
        .returning(webhook_deliveries.c.id)
        .cte("delivery")
    )
