"""The usage ledger's SQL: COPY of batches, inserts with job transitions, and the §8.5 sums."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import api_keys, usage_events

USAGE_COLUMNS = (
    "created_at", "tenant_id", "key_id", "request_id", "route", "method", "status", "latency_ms", "kind",
    "input_tokens", "output_tokens", "audio_seconds", "diarization_seconds", "requests",
)
_COPY_SQL = f"COPY usage_events ({', '.join(USAGE_COLUMNS)}) FROM STDIN"


def usage_cte(events: Sequence[dict[str, Any]], done: Any) -> Any:
    """A CTE inserting `events`, once per row of the CTE `done` (none when its UPDATE matched nothing)."""
    selects = [
        sa.select(*(sa.literal(e[c], usage_events.c[c].type).label(c) for c in USAGE_COLUMNS)).select_from(done)
        for e in events
    ]
    source = selects[0] if len(selects) == 1 else sa.union_all(*selects)
    return usage_events.insert().from_select(list(USAGE_COLUMNS), source).cte("usage")


class UsageTable:
    """Writes and sums `usage_events`."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def copy(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """COPY rows (in USAGE_COLUMNS order) in one transaction: far cheaper per row than INSERT."""
        async with self._db.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            async with driver.transaction(), driver.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
                for row in rows:
                    await copy.write_row(row)

    async def insert(self, events: Sequence[dict[str, Any]]) -> None:
        """Insert a few events (dicts keyed by USAGE_COLUMNS)."""
        if events:
            async with self._db.begin() as conn:
                await conn.execute(usage_events.insert(), list(events))

    async def key_in_tenant(self, tenant_id: str, key_id: str) -> bool:
        """True when the key exists in the tenant (revoked keys included)."""
        async with self._db.connect() as conn:
            found = await conn.execute(
                sa.select(api_keys.c.id).where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)
            )
            return found.first() is not None

    async def daily_sums(
        self, tenant_id: str, lo: datetime, hi: datetime, *, key_id: str | None, kind: str | None
    ) -> list[Any]:
        """(day, key_id, kind, requests, input_tokens, output_tokens, audio_seconds) rows, ordered.

        Each event counts under its kind; a diarization event's seconds are in diarization_seconds.
        The diarization step of a speaker_labels transcription recorded on one stt event (an stt
        event carrying diarization_seconds) also counts as one diarization request.
        """
        ev = usage_events.c
        scope = [ev.tenant_id == tenant_id, ev.created_at >= lo, ev.created_at < hi]
        if key_id is not None:
            scope.append(ev.key_id == key_id)
        own = sa.select(
            ev.created_at, ev.key_id, ev.kind, ev.requests, ev.input_tokens, ev.output_tokens,
            sa.case((ev.kind == "diarization", ev.diarization_seconds), else_=ev.audio_seconds).label("seconds"),
        ).where(*scope, ev.kind.is_not(None))
        step = sa.select(
            ev.created_at, ev.key_id, sa.literal("diarization").label("kind"), ev.requests,
            sa.literal(0).label("input_tokens"), sa.literal(0).label("output_tokens"),
            ev.diarization_seconds.label("seconds"),
        ).where(*scope, ev.kind == "stt", ev.diarization_seconds > 0)
        events = sa.union_all(own, step).subquery()
        day = sa.func.date(sa.func.timezone("UTC", events.c.created_at)).label("day")
        stmt = (
            sa.select(
                day,
                events.c.key_id,
                events.c.kind,
                sa.func.sum(events.c.requests).label("requests"),
                sa.func.sum(events.c.input_tokens).label("input_tokens"),
                sa.func.sum(events.c.output_tokens).label("output_tokens"),
                sa.func.sum(events.c.seconds).label("audio_seconds"),
            )
            .group_by(day, events.c.key_id, events.c.kind)
            .order_by(day, events.c.key_id, events.c.kind)
        )
        if kind is not None:
            stmt = stmt.where(events.c.kind == kind)
        async with self._db.connect() as conn:
            return list((await conn.execute(stmt)).all())
