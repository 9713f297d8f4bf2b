"""API-key and tenant SQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexia.db.rows import KeyRow, TenantRow, key_row, tenant_row
from lexia.db.tables import api_keys, tenants

ADMIN_SCOPES = ["admin", "*"]


class LastAdminKey(Exception):
    """The change would leave the tenant without an active admin key."""


class UnknownTenant(Exception):
    """The tenant does not exist."""


class KeyTable:
    """`api_keys`: lookups by hash, management within a tenant, last-used stamps."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def by_hash(self, digest: bytes) -> tuple[KeyRow, bytes] | None:
        """The key stored under this HMAC, with the stored hash (for the constant-time compare)."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest))).first()
        return (key_row(row), bytes(row.key_hash)) if row is not None else None

    async def rehash(self, key_id: str, old: bytes, new: bytes) -> None:
        """Replace a hash made with the previous pepper."""
        async with self._db.begin() as conn:
            await conn.execute(
                api_keys.update().where(api_keys.c.id == key_id, api_keys.c.key_hash == old).values(key_hash=new)
            )

    async def insert(self, values: Mapping[str, Any], *, create_tenant: bool) -> KeyRow:
        """Store a key; its tenant is created first when asked, else it must exist (UnknownTenant)."""
        async with self._db.begin() as conn:
            tenant_id = values["tenant_id"]
            if create_tenant:
                await conn.execute(
                    sa.text("INSERT INTO tenants (id, created_at) VALUES (:id, now()) ON CONFLICT (id) DO NOTHING"),
                    {"id": tenant_id},
                )
            elif (await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))).first() is None:
                raise UnknownTenant(tenant_id)
            row = (await conn.execute(api_keys.insert().values(**values).returning(api_keys))).one()
        return key_row(row)

    async def get(self, tenant_id: str | None, key_id: str) -> KeyRow | None:
        """One key (of one tenant unless tenant_id is None)."""
        query = sa.select(api_keys).where(api_keys.c.id == key_id)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        return key_row(row) if row is not None else None

    async def page(
        self, tenant_id: str | None, *, limit: int, after: str | None, include_revoked: bool
    ) -> tuple[list[KeyRow], bool]:
        """Newest first; return (page, has_more)."""
        query = sa.select(api_keys).order_by(api_keys.c.id.desc()).limit(limit + 1)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        if after:
            query = query.where(api_keys.c.id < after)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [key_row(r) for r in rows[:limit]], len(rows) > limit

    async def update(
        self, tenant_id: str, key: KeyRow, values: Mapping[str, Any], *, guard_admin: bool
    ) -> KeyRow:
        """Apply changes; with `guard_admin`, refuse (LastAdminKey) to leave the tenant without an admin key."""
        async with self._db.begin() as conn:
            if guard_admin:
                await _guard_last_admin(conn, key)
            row = (
                await conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id == key.id, api_keys.c.tenant_id == tenant_id)
                    .values(**values)
                    .returning(api_keys)
                )
            ).one()
        return key_row(row)

    async def revoke(self, key: KeyRow, *, guard_admin: bool) -> KeyRow | None:
        """Stamp revoked_at now; None if it was revoked in between."""
        async with self._db.begin() as conn:
            if guard_admin:
                await _guard_last_admin(conn, key)
            row = (
                await conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id == key.id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=sa.func.now())
                    .returning(api_keys)
                )
            ).first()
        return key_row(row) if row is not None else None

    async def touch(self, used: Mapping[str, datetime]) -> None:
        """Raise last_used_at of several keys in one statement."""
        async with self._db.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE api_keys SET last_used_at = v.at FROM "
                    "(SELECT unnest(CAST(:ids AS text[])) AS id,"
                    " unnest(CAST(:ats AS timestamptz[])) AS at) AS v "
                    "WHERE api_keys.id = v.id AND "
                    "(api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.at)"
                ),
                {"ids": list(used), "ats": list(used.values())},
            )

    async def audio_limit(self, key_id: str) -> int | None:
        """The key's own audio_seconds_per_hour (None: the server default)."""
        async with self._db.connect() as conn:
            value = (
                await conn.execute(sa.select(api_keys.c.audio_seconds_per_hour).where(api_keys.c.id == key_id))
            ).scalar_one_or_none()
        return None if value is None else int(value)


async def _guard_last_admin(conn: AsyncConnection, key: KeyRow) -> None:
    """Lock the tenant's active admin keys (so two revocations cannot both pass) and refuse the last."""
    if not set(ADMIN_SCOPES) & set(key.scopes):
        return
    rows = (
        await conn.execute(
            sa.select(api_keys.c.id)
            .where(
                api_keys.c.tenant_id == key.tenant_id,
                api_keys.c.revoked_at.is_(None),
                sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > sa.func.now()),
                api_keys.c.scopes.overlap(ADMIN_SCOPES),
            )
            .with_for_update()
        )
    ).all()
    if {r.id for r in rows} <= {key.id}:
        raise LastAdminKey(key.tenant_id)


class TenantTable:
    """`tenants`."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get(self, tenant_id: str) -> TenantRow | None:
        """One tenant."""
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        return tenant_row(row) if row is not None else None

    async def update(self, tenant_id: str, changes: Mapping[str, int | None]) -> TenantRow | None:
        """Set retention fields (None = back to the server default)."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    tenants.update().where(tenants.c.id == tenant_id).values(**changes).returning(tenants)
                )
            ).first()
        return tenant_row(row) if row is not None else None

