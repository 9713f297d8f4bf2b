"""Webhook SQL: per-tenant signing secrets, the delivery rows and their attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.rows import DeliveryRow, SecretRow, delivery_row, secret_row
from lexia.db.tables import jobs, webhook_deliveries, webhook_secrets

_NO_METADATA = sa.cast({"metadata": None}, JSONB)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """The delivery of one terminal event, written with the transition that causes it."""

    id: str
    event: str
    payload: dict[str, Any]
    at: datetime


def delivery_cte(done: Any, delivery: NewDelivery) -> Any:
    """A CTE inserting the delivery for the job row in `done` if it has a webhook (one per event)."""
    source = sa.select(
        sa.literal(delivery.id),
        done.c.tenant_id,
        done.c.id,
        sa.literal(delivery.event),
        done.c.webhook_url,
        sa.literal("pending"),
        sa.literal(delivery.payload, JSONB),
        sa.literal([], JSONB),
        sa.literal(delivery.at, sa.DateTime(timezone=True)),
        sa.literal(delivery.at, sa.DateTime(timezone=True)),
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


def erase_metadata(resource_id: str) -> Any:
    """The UPDATE that nulls `metadata` in the payloads of a deleted resource's deliveries."""
    return (
        webhook_deliveries.update()
        .where(webhook_deliveries.c.resource_id == resource_id)
        .values(payload=webhook_deliveries.c.payload.op("||")(_NO_METADATA))
    )


class SecretTable:
    """`webhook_secrets`: one row per tenant."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get_or_create(self, tenant_id: str, new_secret: str, now: datetime) -> SecretRow:
        """The tenant's secret row, created with `new_secret` if it has none yet."""
        async with self._db.begin() as conn:
            await conn.execute(
                pg_insert(webhook_secrets)
                .values(tenant_id=tenant_id, secret=new_secret, created_at=now)
                .on_conflict_do_nothing(index_elements=["tenant_id"])
            )
            row = (
                await conn.execute(sa.select(webhook_secrets).where(webhook_secrets.c.tenant_id == tenant_id))
            ).one()
        return secret_row(row)

    async def rotate(self, tenant_id: str, new_secret: str, now: datetime, previous_until: datetime) -> SecretRow:
        """Install `new_secret`; the current one becomes the previous one until `previous_until`."""
        insert = pg_insert(webhook_secrets).values(tenant_id=tenant_id, secret=new_secret, created_at=now)
        stmt = insert.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={
                "previous_secret": webhook_secrets.c.secret,
                "previous_expires_at": previous_until,
                "secret": insert.excluded.secret,
                "created_at": insert.excluded.created_at,
            },
        ).returning(webhook_secrets)
        async with self._db.begin() as conn:
            return secret_row((await conn.execute(stmt)).one())


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt, with its job's custom auth header (if any)."""

    delivery: DeliveryRow
    auth_name: str | None
    auth_value: str | None


class DeliveryTable:
    """`webhook_deliveries`: reads, claims and recorded attempts."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get(self, tenant_id: str, delivery_id: str) -> DeliveryRow | None:
        """One delivery of the tenant."""
        query = sa.select(webhook_deliveries).where(
            webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.tenant_id == tenant_id
        )
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        return delivery_row(row) if row is not None else None

    async def page(
        self, tenant_id: str, *, resource_id: str | None, status: str | None, limit: int, after: str | None
    ) -> tuple[list[DeliveryRow], bool]:
        """Newest first; return (page, has_more)."""
        query = sa.select(webhook_deliveries).where(webhook_deliveries.c.tenant_id == tenant_id)
        if resource_id is not None:
            query = query.where(webhook_deliveries.c.resource_id == resource_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        if after is not None:
            query = query.where(webhook_deliveries.c.id < after)
        query = query.order_by(webhook_deliveries.c.id.desc()).limit(limit + 1)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [delivery_row(r) for r in rows[:limit]], len(rows) > limit

    async def make_due(self, tenant_id: str, delivery_id: str, now: datetime) -> DeliveryRow | None:
        """Pending now; a finished delivery gets exactly one more attempt (`manual`)."""
        stmt = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.tenant_id == tenant_id)
            .values(manual=webhook_deliveries.c.status != "pending", status="pending", next_attempt_at=now)
            .returning(webhook_deliveries)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return delivery_row(row) if row is not None else None

    async def claim(self, delivery_id: str, now: datetime, hold: timedelta) -> Claimed | None:
        """Take a due pending delivery for one attempt by moving its next attempt `hold` ahead."""
        stmt = (
            webhook_deliveries.update()
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now + timedelta(seconds=1),
            )
            .values(next_attempt_at=now + hold)
            .returning(webhook_deliveries)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None
            auth = (
                await conn.execute(
                    sa.select(jobs.c.webhook_auth_header_name, jobs.c.webhook_auth_header_value).where(
                        jobs.c.id == row.resource_id
                    )
                )
            ).first()
        return Claimed(delivery_row(row), auth[0] if auth else None, auth[1] if auth else None)

    async def record(
        self,
        delivery: DeliveryRow,
        attempt: dict[str, Any],
        *,
        status: str,
        next_attempt_at: datetime | None,
        status_code: int | None,
    ) -> None:
        """Append an attempt, set the delivery's status and the job's webhook_status_code, together."""
        async with self._db.begin() as conn:
            await conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == delivery.id)
                .values(
                    attempts=webhook_deliveries.c.attempts.op("||")(sa.cast([attempt], JSONB)),
                    status=status,
                    next_attempt_at=next_attempt_at,
                    manual=False,
                )
            )
            await conn.execute(
                jobs.update().where(jobs.c.id == delivery.resource_id).values(webhook_status_code=status_code)
            )

    async def requeue_due(self, moment: datetime, grace: timedelta, batch: int) -> list[str]:
        """Pending deliveries due for longer than `grace` (their message was lost): reset and return."""
        candidates = (
            sa.select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at < moment - grace)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id.in_(candidates.scalar_subquery()))
            .values(next_attempt_at=moment)
            .returning(webhook_deliveries.c.id)
        )
        async with self._db.begin() as conn:
            return list((await conn.execute(stmt)).scalars().all())
