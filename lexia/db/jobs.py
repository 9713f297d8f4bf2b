"""Job SQL: tenant-scoped reads, the submission insert, guarded transitions, sweeps and retention.

A job's row is the truth. Every state change is one guarded UPDATE committed when it happens; a
terminal transition also writes the job's usage events and its webhook delivery in the same
statement (data-modifying CTEs), so a result, its metering and its event exist together or not
at all. Single statements run in autocommit: one round trip instead of BEGIN, statement, COMMIT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.rows import JobRow, job_row
from lexia.db.tables import jobs, tenants
from lexia.db.usage import usage_cte
from lexia.db.webhooks import NewDelivery, delivery_cte, erase_metadata

ACTIVE = ("queued", "processing")
TERMINAL = ("completed", "error", "cancelled")
_ERASED_OPTIONS = {"prompt": None, "keyterms_prompt": None}


def _ulid(column: Any) -> Any:
    return sa.func.right(column, 26)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What the submission insert did: `created` (with the queue position of a queued job),
    `full` (the queue cap was reached) or `duplicate` (the idempotency key won elsewhere)."""

    outcome: Literal["created", "full", "duplicate"]
    row: JobRow | None = None
    queue_position: int | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """A terminal transition that happened: the row after it and the delivery it wrote (if any)."""

    row: JobRow
    delivery_id: str | None


class JobTable:
    """Reads and transitions of `jobs` rows."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self._auto = db.execution_options(isolation_level="AUTOCOMMIT")

    # -- reads ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRow | None:
        """One row (of one tenant unless tenant_id is None)."""
        query = sa.select(jobs).where(jobs.c.id == job_id)
        if tenant_id is not None:
            query = query.where(jobs.c.tenant_id == tenant_id)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return job_row(row) if row is not None else None

    async def page(
        self, tenant_id: str, *, kind: str | None, status: str | None, limit: int, after: str | None
    ) -> tuple[list[JobRow], bool]:
        """Newest first (by the ULID, across kinds); return (page, has_more)."""
        query = sa.select(jobs).where(jobs.c.tenant_id == tenant_id)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if after is not None:
            query = query.where(_ulid(jobs.c.id) < after[-26:])
        query = query.order_by(_ulid(jobs.c.id).desc()).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [job_row(r) for r in rows[:limit]], len(rows) > limit

    async def queue_positions(self, ids: Sequence[str]) -> dict[str, int]:
        """1-based positions among all queued jobs (oldest first) of the given queued ids."""
        if not ids:
            return {}
        ranked = (
            sa.select(
                jobs.c.id,
                sa.func.row_number().over(order_by=(jobs.c.created_at, jobs.c.id)).label("position"),
            )
            .where(jobs.c.status == "queued")
            .subquery()
        )
        query = sa.select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(list(ids)))
        async with self.db.connect() as conn:
            found = (await conn.execute(query)).all()
        return {r.id: int(r.position) for r in found}

    async def active_counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> jobs queued or processing, all tenants."""
        query = (
            sa.select(jobs.c.kind, jobs.c.status, sa.func.count())
            .where(jobs.c.status.in_(ACTIVE))
            .group_by(jobs.c.kind, jobs.c.status)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def queued_count(self) -> int:
        """Jobs waiting for a worker, all tenants."""
        async with self.db.connect() as conn:
            query = sa.select(sa.func.count()).where(jobs.c.status == "queued")
            return int((await conn.execute(query)).scalar_one())

    async def find_idempotent(self, tenant_id: str, key: str, now: datetime) -> JobRow | None:
        """The live job the tenant created with this Idempotency-Key."""
        query = sa.select(jobs).where(
            jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key == key, jobs.c.idempotency_expires_at > now
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return job_row(row) if row is not None else None

    # -- submission -------------------------------------------------------------------------

    async def insert(
        self,
        values: Mapping[str, Any],
        *,
        retention_defaults: tuple[int, int],
        queue_cap: int,
        now: datetime,
    ) -> Inserted:
        """Insert a job in one INSERT … SELECT: the queue cap (queued jobs only), the tenant's
        retention defaults where `values` leaves them None, and the queue position, all resolved
        in the statement that creates the row.

        With an idempotency key an expired row holding the same key gives it up first, in the
        same transaction; a live one makes the insert a `duplicate` (the unique index decides).
        """
        row_values = dict(values)
        tenant = sa.select(tenants).where(tenants.c.id == row_values["tenant_id"]).subquery()
        for column, default in zip(("audio_retention_hours", "result_retention_days"), retention_defaults, strict=True):
            if row_values[column] is None:
                row_values[column] = sa.func.coalesce(sa.select(tenant.c[column]).scalar_subquery(), default)
        queued = row_values["status"] == "queued"
        columns: list[Any] = [
            v if isinstance(v, sa.ClauseElement) else sa.literal(v, jobs.c[k].type) for k, v in row_values.items()
        ]
        source = sa.select(*columns)
        if queued and queue_cap > 0:
            depth = sa.select(sa.func.count()).where(jobs.c.status == "queued").scalar_subquery()
            source = source.where(depth < queue_cap)
        earlier = jobs.alias("earlier")
        position = (
            sa.select(sa.func.count())
            .select_from(earlier)
            .where(
                earlier.c.status == "queued",
                sa.tuple_(earlier.c.created_at, earlier.c.id) < (row_values["created_at"], row_values["id"]),
            )
            .scalar_subquery()
            + 1
        )
        inserted = jobs.insert().from_select(list(row_values), source).returning(
            jobs, (position if queued else sa.null()).label("queue_position")
        )
        key = row_values.get("idempotency_key")
        try:
            if key is None:
                async with self._auto.connect() as conn:
                    row = (await conn.execute(inserted)).first()
            else:
                async with self.db.begin() as conn:
                    await conn.execute(
                        jobs.update()
                        .where(
                            jobs.c.tenant_id == row_values["tenant_id"],
                            jobs.c.idempotency_key == key,
                            jobs.c.idempotency_expires_at <= now,
                        )
                        .values(idempotency_key=None, idempotency_fingerprint=None, idempotency_expires_at=None)
                    )
                    row = (await conn.execute(inserted)).first()
        except IntegrityError:
            if key is None:
                raise
            return Inserted("duplicate")
        if row is None:
            return Inserted("full")
        return Inserted("created", job_row(row), row.queue_position)

    async def mark_unsent(self, job_id: str) -> None:
        """The job's message could not be sent: the sweeper's next pass sends it (enqueued_at NULL)."""
        async with self._auto.connect() as conn:
            await conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(enqueued_at=None)
            )

    # -- transitions ------------------------------------------------------------------------

    async def claim(
        self, job_id: str, kind: str, worker: str, *, now: datetime, lease: timedelta, max_attempts: int
    ) -> JobRow | None:
        """Take an async job that is queued, or processing with a lapsed lease and attempts left."""
        runnable = sa.or_(
            jobs.c.status == "queued",
            sa.and_(
                jobs.c.status == "processing",
                jobs.c.lease_expires_at < now,
                jobs.c.attempts < max_attempts,
            ),
        )
        stmt = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.kind == kind, jobs.c.mode == "async", jobs.c.deleted_at.is_(None))
            .where(runnable)
            .values(
                status="processing",
                stage=sa.case((jobs.c.audio_path.is_(None), "fetching"), else_="decoding"),
                attempts=jobs.c.attempts + 1,
                started_at=sa.func.coalesce(jobs.c.started_at, now),
                lease_expires_at=now + lease,
                worker=worker,
            )
            .returning(jobs)
        )
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return job_row(row) if row is not None else None

    async def heartbeat(
        self,
        job_id: str,
        attempt: int,
        *,
        lease_until: datetime,
        progress: float,
        stage: str | None,
        duration: float | None,
    ) -> bool:
        """Renew the lease and commit progress (never lowered); False once the attempt is not current."""
        values: dict[str, Any] = {
            "lease_expires_at": lease_until,
            "progress": sa.func.greatest(jobs.c.progress, min(1.0, max(0.0, progress))),
        }
        if stage is not None:
            values["stage"] = stage
        if duration is not None:
            values["audio_duration"] = sa.func.coalesce(jobs.c.audio_duration, round(duration, 3))
        return await self._current(job_id, attempt, values)

    async def park(self, job_id: str, attempt: int, *, due: datetime, code: str, message: str) -> bool:
        """Keep the job `processing`, runnable again at `due`, with the last error kept."""
        values = {"lease_expires_at": due, "enqueued_at": due, "error_code": code, "error_message": message}
        return await self._current(job_id, attempt, values)

    async def release(self, job_id: str, attempt: int, *, now: datetime) -> bool:
        """Give the lease up now: the job may run again at once."""
        return await self._current(job_id, attempt, {"lease_expires_at": now, "enqueued_at": None})

    async def _current(self, job_id: str, attempt: int, values: dict[str, Any]) -> bool:
        async with self._auto.connect() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing", jobs.c.attempts == attempt)
                .values(**values)
            )
        return bool(done.rowcount)

    async def finish(
        self,
        job_id: str,
        status: str,
        *,
        now: datetime,
        attempt: int | None = None,
        tenant_id: str | None = None,
        only_lapsed: bool = False,
        result: dict[str, Any] | None = None,
        warnings: Sequence[dict[str, str]] = (),
        error: tuple[str, str] | None = None,
        audio_duration: float | None = None,
        audio_path: str | None = None,
        usage: Sequence[dict[str, Any]] = (),
        delivery: NewDelivery | None = None,
    ) -> Ended | None:
        """Move an active job to `status` (guarded); None if it was already terminal or not ours.

        Audio not retained is forgotten in the same UPDATE (the caller deletes the file after the
        commit; a crash in between leaves an orphan, which the retention purge removes).
        """
        values: dict[str, Any] = {
            "status": status,
            "stage": None,
            "finished_at": now,
            "lease_expires_at": None,
            "expires_at": sa.case(
                (jobs.c.result_retention_days > 0, now + sa.func.make_interval(0, 0, 0, jobs.c.result_retention_days)),
                else_=sa.null(),
            ),
        }
        path = sa.literal(audio_path) if audio_path is not None else jobs.c.audio_path
        kept = sa.and_(path.is_not(None), jobs.c.audio_retention_hours > 0)
        values["audio_path"] = sa.case((kept, path), else_=sa.null())
        values["audio_expires_at"] = sa.case(
            (kept, now + sa.func.make_interval(0, 0, 0, 0, jobs.c.audio_retention_hours)), else_=sa.null()
        )
        if status == "completed":
            values.update(progress=1.0, result=result, warnings=list(warnings), error_code=None, error_message=None)
        elif status == "error" and error is not None:
            values.update(error_code=error[0], error_message=error[1])
        else:
            values.update(error_code=None, error_message=None)
        if audio_duration is not None:
            values["audio_duration"] = round(audio_duration, 3)
        update = jobs.update().where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
        if attempt is not None:
            update = update.where(jobs.c.attempts == attempt)
        if tenant_id is not None:
            update = update.where(jobs.c.tenant_id == tenant_id)
        if only_lapsed:
            update = update.where(jobs.c.status == "processing", jobs.c.lease_expires_at < now)
        done = update.values(**values).returning(*jobs.c).cte("done")
        side: list[Any] = []
        if usage:
            side.append(usage_cte(usage, done))
        delivery_id: Any = sa.null()
        if delivery is not None:
            written = delivery_cte(done, delivery)
            side.append(written)
            delivery_id = sa.select(written.c.id).scalar_subquery()
        stmt = sa.select(done, delivery_id.label("delivery_id")).add_cte(*side)
        async with self._auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return Ended(job_row(row), row.delivery_id) if row is not None else None

    async def forget_audio(self, job_id: str, path: str) -> None:
        """Clear a job's audio path once its file is gone."""
        async with self._auto.connect() as conn:
            await conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.audio_path == path).values(audio_path=None)
            )

    # -- the sweeper ------------------------------------------------------------------------

    async def requeue_stale(
        self, moment: datetime, *, requeue_after: float, max_doublings: int, batch: int
    ) -> list[tuple[str, str]]:
        """(id, kind) of async jobs to enqueue again, stamped as enqueued now.

        Queued jobs not started long after their last enqueue (the wait doubles per re-enqueue)
        and processing jobs whose lease lapsed (their worker died) are taken.
        """
        doublings = sa.func.least(sa.func.greatest(jobs.c.enqueues - 1, 0), max_doublings)
        backoff = sa.func.make_interval(0, 0, 0, 0, 0, 0, requeue_after * sa.func.power(2, doublings))
        stale = sa.or_(jobs.c.enqueued_at.is_(None), jobs.c.enqueued_at < moment - backoff)
        lapsed = sa.and_(
            jobs.c.status == "processing",
            jobs.c.lease_expires_at < moment,
            sa.or_(stale, jobs.c.enqueued_at < jobs.c.lease_expires_at),
        )
        candidates = (
            sa.select(jobs.c.id)
            .where(jobs.c.mode == "async", jobs.c.deleted_at.is_(None))
            .where(sa.or_(sa.and_(jobs.c.status == "queued", stale), lapsed))
            .order_by(jobs.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            jobs.update()
            .where(jobs.c.id.in_(candidates.scalar_subquery()))
            .values(enqueued_at=moment, enqueues=jobs.c.enqueues + 1)
            .returning(jobs.c.id, jobs.c.kind)
        )
        async with self.db.begin() as conn:
            return [(r.id, r.kind) for r in (await conn.execute(stmt)).all()]

    async def lapsed_sync(self, moment: datetime, batch: int) -> list[JobRow]:
        """Sync jobs still processing past their lease (their API process is gone)."""
        query = (
            sa.select(jobs)
            .where(jobs.c.mode == "sync", jobs.c.status == "processing", jobs.c.lease_expires_at < moment)
            .limit(batch)
        )
        async with self.db.connect() as conn:
            return [job_row(r) for r in (await conn.execute(query)).all()]

    async def ended(self, ids: Sequence[str]) -> list[str]:
        """Those of `ids` whose job is in a terminal state."""
        async with self.db.connect() as conn:
            query = sa.select(jobs.c.id).where(jobs.c.id.in_(list(ids)), jobs.c.status.not_in(ACTIVE))
            return list((await conn.execute(query)).scalars().all())

    # -- retention --------------------------------------------------------------------------

    async def erase(self, job_id: str, now: datetime) -> JobRow | None:
        """Erase a terminal job's content and its deliveries' metadata; None if not terminal or done."""
        kept = sa.case(
            (jobs.c.result.is_(None), sa.null()),
            else_=sa.func.jsonb_build_object(
                "language_code", jobs.c.result["language_code"], "speaker_count", jobs.c.result["speaker_count"]
            ),
        )
        stmt = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None), jobs.c.status.in_(TERMINAL))
            .values(
                result=kept,
                options=jobs.c.options.op("||")(sa.cast(_ERASED_OPTIONS, JSONB)),
                audio_url=None,
                audio_filename=None,
                metadata=None,
                webhook_auth_header_value=None,
                deleted_at=now,
                audio_expires_at=now,
            )
            .returning(jobs)
        )
        async with self.db.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is not None:
                await conn.execute(erase_metadata(job_id))
        return job_row(row) if row is not None else None

    async def expired(self, moment: datetime, batch: int) -> list[str]:
        """Ids of terminal jobs whose results expired and are not erased yet."""
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.deleted_at.is_(None), jobs.c.expires_at <= moment, jobs.c.status.in_(TERMINAL))
            .limit(batch)
        )
        async with self.db.connect() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def audio_due(self, moment: datetime, batch: int) -> list[tuple[str, str]]:
        """(id, path) of ended jobs whose audio file must go (expired, deleted, or never retained)."""
        due = sa.or_(
            jobs.c.audio_expires_at <= moment,
            jobs.c.deleted_at.is_not(None),
            sa.and_(
                jobs.c.audio_expires_at.is_(None),
                jobs.c.status.in_(TERMINAL),
                jobs.c.finished_at + sa.func.make_interval(0, 0, 0, 0, jobs.c.audio_retention_hours) <= moment,
            ),
        )
        query = (
            sa.select(jobs.c.id, jobs.c.audio_path)
            .where(jobs.c.audio_path.is_not(None), jobs.c.status.in_(TERMINAL), due)
            .limit(batch)
        )
        async with self.db.connect() as conn:
            return [(r.id, r.audio_path) for r in (await conn.execute(query)).all()]

    async def release_idempotency_keys(self, moment: datetime) -> int:
        """Forget idempotency keys past their lifetime; return how many."""
        async with self._auto.connect() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.idempotency_key.is_not(None), jobs.c.idempotency_expires_at <= moment)
                .values(idempotency_key=None, idempotency_fingerprint=None, idempotency_expires_at=None)
            )
        return int(done.rowcount)

    async def referenced_audio(self, ids: Iterable[str]) -> set[str]:
        """Audio paths that rows with these ids still reference."""
        async with self.db.connect() as conn:
            query = sa.select(jobs.c.audio_path).where(jobs.c.id.in_(list(ids)), jobs.c.audio_path.is_not(None))
            return set((await conn.execute(query)).scalars().all())
