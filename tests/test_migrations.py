"""bin/migrate: ordered, recorded, idempotent, safe when two processes run it at once."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from lexia.db.migrations import apply, discover, ensure_database, libpq_dsn
from tests.conftest import PG_BASE, drop_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def scratch_db() -> str:
    url = f"{PG_BASE}/lexia_migrate_{os.getpid()}"
    drop_database(url)
    yield url  # type: ignore[misc]
    drop_database(url)


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_migrations_are_ordered_and_named() -> None:
    found = discover()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].name == "0001_foundation.sql"


def test_applied_twice_changes_nothing_the_second_time(scratch_db: str) -> None:
    assert ensure_database(scratch_db) is True
    assert ensure_database(scratch_db) is False
    first = apply(scratch_db)
    assert first == [m.name for m in discover()]
    assert apply(scratch_db) == []
    assert {"tenants", "api_keys", "usage_events", "jobs", "webhook_deliveries", "schema_migrations"} <= _tables(scratch_db)


def test_concurrent_runs_apply_each_migration_once(scratch_db: str) -> None:
    ensure_database(scratch_db)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: apply(scratch_db), range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in discover())
    with psycopg.connect(libpq_dsn(scratch_db)) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count is not None and count[0] == len(discover())


def test_two_migrate_processes_at_once(scratch_db: str) -> None:
    env = {**os.environ, "LEXIA_DATABASE_URL": scratch_db}
    procs = [
        subprocess.Popen([str(ROOT / "bin" / "migrate")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "tenants" in _tables(scratch_db)


def test_edited_migration_is_refused(scratch_db: str, tmp_path: Path) -> None:
    ensure_database(scratch_db)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    apply(scratch_db, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id bigint);")
    with pytest.raises(RuntimeError, match="edited"):
        apply(scratch_db, tmp_path)


def test_failed_migration_leaves_nothing_half_applied(scratch_db: str, tmp_path: Path) -> None:
    ensure_database(scratch_db)
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT * FROM missing_table;")
    with pytest.raises(psycopg.Error):
        apply(scratch_db, tmp_path)
    tables = _tables(scratch_db)
    assert "ok" in tables and "half" not in tables
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int);")
    assert apply(scratch_db, tmp_path) == ["0002_bad.sql"]


def test_migrate_cli_reports_unreachable_database() -> None:
    env = {**os.environ, "LEXIA_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"}
    done = subprocess.run([sys.executable, "-m", "lexia.db.migrations"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("migrate:") and "Traceback" not in done.stderr
