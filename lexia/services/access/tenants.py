"""Tenant settings: retention defaults that apply to resources created afterwards."""

from __future__ import annotations

from collections.abc import Mapping

from lexia.db.keys import TenantTable
from lexia.db.rows import TenantRow
from lexia.errors import NotFound
from lexia.schemas.admin import TenantObject
from lexia.schemas.common import iso


class TenantService:
    """Reads and updates tenants, with the server's retention defaults filled in."""

    def __init__(self, table: TenantTable, *, audio_hours: int, result_days: int) -> None:
        self._table = table
        self._audio_hours = audio_hours
        self._result_days = result_days

    def _view(self, row: TenantRow | None, tenant_id: str) -> TenantObject:
        if row is None:
            raise NotFound(f"No tenant {tenant_id!r}")
        return TenantObject(
            id=row.id,
            audio_retention_hours=self._audio_hours if row.audio_retention_hours is None else row.audio_retention_hours,
            result_retention_days=self._result_days if row.result_retention_days is None else row.result_retention_days,
            created_at=iso(row.created_at) or "",
        )

    async def get(self, tenant_id: str) -> TenantObject:
        """The tenant object (§8.3)."""
        return self._view(await self._table.get(tenant_id), tenant_id)

    async def update(self, tenant_id: str, changes: Mapping[str, int | None]) -> TenantObject:
        """Set retention fields (None = back to the server default)."""
        if not changes:
            return await self.get(tenant_id)
        return self._view(await self._table.update(tenant_id, changes), tenant_id)
