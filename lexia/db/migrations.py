"""Apply sql/NNNN_*.sql in order, each in its own transaction, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by every migrating process; "lexia" in ASCII.
_LOCK_ID = 0x6C65786961


@dataclass(frozen=True)
class Migration:
    """One forward-only migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded to detect edits of applied migrations."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def libpq_dsn(url: str) -> str:
    """Turn a SQLAlchemy URL (postgresql+psycopg://) into a libpq URL."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    """The migrations in a directory, ordered by version; duplicate versions are refused."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration names must look like 0001_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, path.name, path.read_text())
    return [found[v] for v in sorted(found)]


def ensure_database(url: str) -> bool:
    """Create the database named in the URL if it does not exist; True if created."""
    info = psycopg.conninfo.conninfo_to_dict(libpq_dsn(url))
    name = str(info.get("dbname") or "postgres")
    admin = dict(info, dbname="postgres")
    with psycopg.connect(**admin, autocommit=True) as conn:  # type: ignore[arg-type]
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # another process created it between our check and our CREATE
        return True


def apply(url: str, directory: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    migrations = discover(directory)
    applied_now: list[str] = []
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        # Session-level lock: a second migrating process waits here, then finds nothing to do.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"{migration.name} was edited after it was applied; "
                            "write a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def main() -> int:
    """CLI: create the database if missing and apply pending migrations."""
    from lexia.settings import SettingsError, environment_with_dotenv

    env = environment_with_dotenv()
    url = env.get("LEXIA_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/lexia")
    try:
        created = ensure_database(url)
        names = apply(url)
    except (psycopg.Error, RuntimeError, ValueError, SettingsError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    if created:
        print("migrate: created the database")
    print(f"migrate: applied {len(names)} migration(s)" + (": " + ", ".join(names) if names else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
