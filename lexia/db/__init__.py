"""Database access: open_db() builds the async SQLAlchemy engine for PostgreSQL (psycopg 3)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def open_db(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine; connections are made lazily, on first use."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
