"""Database access: open_db() builds the async SQLAlchemy engine; query modules per table group.

`jobs` (transcription and diarization jobs), `keys` (API keys and tenants), `usage` (the usage
ledger) and `webhooks` (signing secrets and deliveries) each hold the SQL of their tables and
hand typed rows (`lexia.db.rows`) to the services, which never write SQL themselves.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


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
