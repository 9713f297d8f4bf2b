"""Database access: open_db() builds the async SQLAlchemy engine; query modules per table group.

`jobs` (transcription and diarization jobs), `keys` (API keys and tenants), `usage` (the usage
ledger) and `webhooks` (signing secrets and deliveries) each hold the SQL of their tables and
hand typed rows (`lexia.db.rows`) to the services, which never write SQL themselves.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# What a failed database call raises (the services catch these without knowing SQLAlchemy).
DatabaseError = (SQLAlchemyError, psycopg.Error)
Database = AsyncEngine


def open_db(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine; connections are made lazily, on first use.

    `hide_parameters` keeps bound values (key hashes, webhook auth values, user text) out of
    every SQLAlchemy error message, so a logged database error never carries a secret.
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
        hide_parameters=True,
    )


async def ping(db: AsyncEngine) -> None:
    """One round trip (readiness)."""
    async with db.connect() as conn:
        await conn.execute(text("SELECT 1"))


def is_outage(exc: BaseException) -> bool:
    """True for a lost or refused database connection (not an error in a query)."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, psycopg.OperationalError)
