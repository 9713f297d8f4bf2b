"""Shared fixtures: a fresh lexia_test database migrated once, Redis db 15, apps over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from lexia.db.migrations import apply, ensure_database, libpq_dsn
from lexia.queue import ListQueue
from lexia.settings import Settings, load_settings
from tests.harness import AppFactory, TestApp, app_factory

# Every PostgreSQL connection of the run (tests, apps, workers, launched processes) gives up on a
# lock after 20 s and ends a transaction left idle for 60 s: a leaked transaction or a blocking
# query from a test's own event loop becomes an error instead of a silent deadlock.
os.environ.setdefault("PGOPTIONS", "-c lock_timeout=20s -c idle_in_transaction_session_timeout=60s")

PG_BASE = os.environ.get("LEXIA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
# One database and Redis db per test run, so concurrent runs on one machine do not collide.
_RUN = os.getpid()
TEST_DB_URL = f"{PG_BASE}/lexia_test_{_RUN}"
TEST_REDIS_URL = os.environ.get("LEXIA_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{1 + _RUN % 15}")
PEPPER = "test-pepper-" + "x" * 40

BASE_ENV = {
    "LEXIA_ENV": "test",
    "LEXIA_DATABASE_URL": TEST_DB_URL,
    "LEXIA_REDIS_URL": TEST_REDIS_URL,
    "LEXIA_KEY_PEPPER": PEPPER,
    "LEXIA_ENGINES": "fake",
    "LEXIA_USAGE_FLUSH_SECONDS": "0.05",
}


def make_settings(**overrides: str) -> Settings:
    """Test settings; overrides are LEXIA_* variables."""
    return load_settings({**BASE_ENV, **overrides})


def drop_database(url: str) -> None:
    """Drop the database named in the URL (connections are closed by force)."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_dsn(url))
    name = info["dbname"]
    with psycopg.connect(**dict(info, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh database for this run, migrated with bin/migrate's code, dropped at the end."""
    drop_database(TEST_DB_URL)
    ensure_database(TEST_DB_URL)
    apply(TEST_DB_URL)
    yield TEST_DB_URL
    drop_database(TEST_DB_URL)


@pytest.fixture(autouse=True)
async def clean_state(database: str) -> AsyncIterator[None]:
    """Empty every table and the test Redis db before each test."""
    with psycopg.connect(libpq_dsn(database), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE webhook_deliveries, webhook_secrets, jobs, usage_events, api_keys, tenants CASCADE"
        )
    client = aioredis.from_url(TEST_REDIS_URL)
    await client.flushdb()
    await client.aclose()
    yield


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Start apps in-process (lifespan and requests on the test's loop) with LEXIA_* overrides."""
    async with app_factory(make_settings, tmp_path, served=False) as factory:
        yield factory


@pytest.fixture
async def serve_app(tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Start apps on a real uvicorn server (127.0.0.1, free ports) with LEXIA_* overrides."""
    async with app_factory(make_settings, tmp_path, served=True) as factory:
        yield factory


@pytest.fixture
async def api(start_app: AppFactory) -> TestApp:
    """One in-process app with default test settings and a list queue."""
    return await start_app(queue=ListQueue())


def bearer(key: str) -> dict[str, str]:
    """Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}
