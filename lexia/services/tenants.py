"""Tenant settings: retention defaults that apply to resources created afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import tenants
from lexia.errors import NotFound


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant with its effective retention (server defaults filled in)."""

    id: str
    audio_retention_hours: int
    result_retention_days: int
    created_at: datetime


class TenantService:
    """Reads and updates tenants."""

    def __init__(self, db: AsyncEngine, *, audio_hours: int, result_days: int) -> None:
        self._db = db
        self._audio_hours = audio_hours
        self._result_days = result_days

    def _tenant(self, row: Any) -> Tenant:
        return Tenant(
            id=row.id,
            audio_retention_hours=(
                self._audio_hours if row.audio_retention_hours is None else row.audio_retention_hours
            ),
            result_retention_days=(
                self._result_days if row.result_retention_days is None else row.result_retention_days
            ),
            created_at=row.created_at,
        )

    async def get(self, tenant_id: str) -> Tenant:
        """One tenant."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise NotFound(f"No tenant {tenant_id!r}")
        return self._tenant(row)

    async def update(self, tenant_id: str, changes: dict[str, int | None]) -> Tenant:
        """Set retention fields (None = back to the server default)."""
        if not changes:
            return await self.get(tenant_id)
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    tenants.update().where(tenants.c.id == tenant_id).values(**changes).returning(tenants)
                )
            ).first()
        if row is None:
            raise NotFound(f"No tenant {tenant_id!r}")
        return self._tenant(row)
