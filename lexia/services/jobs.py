"""Job rows (transcriptions and diarizations share one id with their job): reads, lists, §6 shape.

A job's row is the truth: it is written and committed before its id is enqueued, and every
state change is a guarded UPDATE (see lexia.services.lifecycle). Queues only carry ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import jobs
from lexia.errors import NotFound, ValidationFailed
from lexia.ids import is_id
from lexia.schemas.lexia import iso

KINDS = ("transcription", "diarization")
STATUSES = ("queued", "processing", "completed", "error", "cancelled")
ACTIVE = ("queued", "processing")
TERMINAL = ("completed", "error", "cancelled")
PREFIX = {"transcription": "tr", "diarization": "dz"}
RUN_ACTOR = {"transcription": "transcription.run", "diarization": "diarization.run"}
DELIVER_ACTOR = "webhook.deliver"
RESULT_PATH = {"transcription": "/v1/transcriptions", "diarization": "/v1/diarization"}
NOUN = {"transcription": "transcript", "diarization": "diarization"}


class JobQueue(Protocol):
    """Where job and delivery ids are sent (Dramatiq in production, a list in tests)."""

    async def enqueue(self, actor: str, item_id: str, *, delay: float | None = None) -> None:
        """Send `actor(item_id)`, optionally after `delay` seconds."""
        ...


def kind_of(job_id: str) -> str | None:
    """`transcription` for tr_ ids, `diarization` for dz_ ids, None for anything else."""
    for kind, prefix in PREFIX.items():
        if is_id(job_id, prefix):
            return kind
    return None


def result_url(row: Any) -> str:
    """Path of the job's resource."""
    return f"{RESULT_PATH[row.kind]}/{row.id}"


def _ulid(column: Any) -> Any:
    return sa.func.right(column, 26)


class JobStore:
    """Tenant-scoped reads of job rows."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get(self, tenant_id: str, job_id: str, kind: str | None = None) -> Any:
        """One row of the tenant; malformed, unknown, foreign (or other-kind) ids are all 404."""
        found = kind_of(job_id)
        noun = NOUN.get(kind or "", "job")
        if found is None or (kind is not None and found != kind):
            raise NotFound(f"No {noun} with id {job_id!r}")
        async with self._db.connect() as conn:
            row = (
                await conn.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id))
            ).first()
        if row is None:
            raise NotFound(f"No {noun} with id {job_id!r}")
        return row

    async def list(
        self,
        tenant_id: str,
        *,
        kind: str | None,
        status: str | None,
        limit: int,
        after: str | None,
    ) -> tuple[list[Any], bool]:
        """Newest first (by the ULID, across kinds); return (page, has_more)."""
        query = sa.select(jobs).where(jobs.c.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if after is not None:
            query = query.where(_ulid(jobs.c.id) < after[-26:])
        query = query.order_by(_ulid(jobs.c.id).desc()).limit(limit + 1)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return list(rows[:limit]), len(rows) > limit

    async def queue_positions(self, rows: Iterable[Any]) -> dict[str, int]:
        """1-based positions among all queued jobs (oldest first) of the queued rows given."""
        queued = [r.id for r in rows if r.status == "queued"]
        if not queued:
            return {}
        ranked = (
            sa.select(
                jobs.c.id,
                sa.func.row_number().over(order_by=(jobs.c.created_at, jobs.c.id)).label("position"),
            )
            .where(jobs.c.status == "queued")
            .subquery()
        )
        query = sa.select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(queued))
        async with self._db.connect() as conn:
            found = (await conn.execute(query)).all()
        return {r.id: int(r.position) for r in found}

    async def active_counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> jobs queued or processing, all tenants (the lexia_jobs gauge)."""
        query = (
            sa.select(jobs.c.kind, jobs.c.status, sa.func.count())
            .where(jobs.c.status.in_(ACTIVE))
            .group_by(jobs.c.kind, jobs.c.status)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        counts = {(kind, status): 0 for kind in KINDS for status in ACTIVE}
        counts.update({(r[0], r[1]): int(r[2]) for r in rows})
        return counts

    async def queued_count(self) -> int:
        """Jobs waiting for a worker, all tenants."""
        async with self._db.connect() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).where(jobs.c.status == "queued"))).scalar_one()
            )


def parse_filter(value: str | None, allowed: Sequence[str], param: str) -> str | None:
    """A list filter: None when absent, else one of `allowed` (422 otherwise)."""
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ValidationFailed(f"{param} must be one of {', '.join(allowed)}", param=param)
    return value


def parse_after(value: str | None, kinds: Sequence[str]) -> str | None:
    """`after` for a list of these kinds: an id of one of them (it need not exist)."""
    if value is None or value == "":
        return None
    found = kind_of(value)
    if found is None or found not in kinds:
        prefixes = " or ".join(f"{PREFIX[k]}_" for k in kinds)
        raise ValidationFailed(f"after must be an id starting with {prefixes}", param="after")
    return value


def job_error(row: Any) -> dict[str, str] | None:
    """`{"code", "message"}` for a job in `error`, else None."""
    if row.status != "error":
        return None
    return {"code": row.error_code or "internal_error", "message": row.error_message or "The job failed"}


def job_object(row: Any, queue_position: int | None = None) -> dict[str, Any]:
    """The §6 job object."""
    terminal = row.status in TERMINAL
    return {
        "id": row.id,
        "object": "job",
        "kind": row.kind,
        "mode": row.mode,
        "status": row.status,
        "stage": None if terminal else (row.stage or ("queued" if row.status == "queued" else None)),
        "progress": round(float(row.progress), 4),
        "queue_position": queue_position if row.status == "queued" else None,
        "attempts": int(row.attempts),
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "error": job_error(row),
        "result_url": result_url(row),
    }
