"""Job state transitions: claim with a lease, heartbeat, park for a retry, and exactly one terminal state.

Every transition is one guarded UPDATE committed when it happens. A terminal transition also
writes, in the same transaction, the job's usage events and its webhook delivery, so a result,
its metering and its event exist together or not at all; the delivery id is enqueued after the
commit, the concurrency slot given back, the audio removed per retention and the job observed in
the pod-wide job-duration histogram (Redis).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import api_keys, jobs, usage_events
from lexia.errors import Conflict
from lexia.services.jobs import ACTIVE, DELIVER_ACTOR, RESULT_PATH, JobQueue, JobStore
from lexia.services.limits import RedisLimiter
from lexia.services.podmetrics import PodMetrics
from lexia.services.usage import UsageEvent
from lexia.services.webhooks import delivery_insert

log = logging.getLogger("lexia.jobs")


@dataclass(frozen=True, slots=True)
class Finished:
    """A terminal transition that happened: the row after it and the delivery to send."""

    row: Any
    delivery_id: str | None
    released_audio: str | None = None  # a file the row no longer references, to delete now


@dataclass(slots=True)
class Metered:
    """Audio processed by a job, for its usage events (seconds)."""

    stt_seconds: float = 0.0
    diarization_seconds: float = 0.0
    diarized: bool = False
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def usage_rows(row: Any, status: str, metered: Metered, at: datetime) -> list[dict[str, Any]]:
    """Usage events of a finished job: stt (and diarization for speaker labels), or diarization."""
    code = {"completed": 200, "cancelled": 499}.get(status, 500)
    base = UsageEvent(
        created_at=at,
        tenant_id=row.tenant_id,
        key_id=row.key_id,
        request_id=row.id,
        route=RESULT_PATH[row.kind],
        method="POST",
        status=code,
        latency_ms=round(metered.latency_ms, 3),
    )
    events: list[UsageEvent] = []
    if row.kind == "transcription":
        events.append(_with(base, kind="stt", audio_seconds=round(metered.stt_seconds, 3)))
        if metered.diarized:
            events.append(_with(base, kind="diarization", diarization_seconds=round(metered.diarization_seconds, 3)))
    else:
        events.append(_with(base, kind="diarization", diarization_seconds=round(metered.diarization_seconds, 3)))
    return [asdict(e) for e in events]


USAGE_COLUMNS = [f.name for f in fields(UsageEvent)]


def _usage_source(rows: list[dict[str, Any]], done: Any) -> Any:
    """SELECT of the usage rows, one per row of `done` (none when the UPDATE matched nothing)."""
    selects = [
        sa.select(*(sa.literal(r[c], usage_events.c[c].type).label(c) for c in USAGE_COLUMNS)).select_from(done)
        for r in rows
    ]
    return selects[0] if len(selects) == 1 else sa.union_all(*selects)


def _with(base: UsageEvent, **changes: Any) -> UsageEvent:
    return replace(base, **changes)


class Lifecycle:
    """Transitions of job rows and what follows a terminal one."""

    def __init__(
        self,
        db: AsyncEngine,
        queue: JobQueue,
        limiter: RedisLimiter,
        *,
        lease_seconds: float,
        max_attempts: int,
        pod: PodMetrics | None = None,
    ) -> None:
        self.db = db
        self.queue = queue
        self.limiter = limiter
        self.pod = pod  # records lexia_job_duration_seconds; None records nothing
        self.lease = lease_seconds
        self.max_attempts = max_attempts
        self.store = JobStore(db)
        # Single-statement transitions run in autocommit: one round trip instead of BEGIN,
        # statement, COMMIT (a single statement is atomic by itself).
        self.auto = db.execution_options(isolation_level="AUTOCOMMIT")

    # -- claim, heartbeat, park ------------------------------------------------------------

    async def claim(self, job_id: str, kind: str, worker: str) -> Any:
        """Take an async job that is queued, or processing with a lapsed lease; None if not ours to run.

        A job whose lapsed attempts already reached LEXIA_JOB_MAX_ATTEMPTS is failed instead.
        """
        now = _now()
        runnable = sa.or_(
            jobs.c.status == "queued",
            sa.and_(
                jobs.c.status == "processing",
                jobs.c.lease_expires_at < now,
                jobs.c.attempts < self.max_attempts,
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
                lease_expires_at=now + timedelta(seconds=self.lease),
                worker=worker,
            )
            .returning(jobs)
        )
        async with self.auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is not None:
            return row
        await self._fail_exhausted(job_id, now)
        return None

    async def _fail_exhausted(self, job_id: str, now: datetime) -> None:
        """A job whose worker was lost on every attempt ends in `error`."""
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if (
            row is None
            or row.status != "processing"
            or row.lease_expires_at is None
            or row.lease_expires_at >= now
            or row.attempts < self.max_attempts
        ):
            return
        code = row.error_code or "internal_error"
        message = row.error_message or (
            f"The job was interrupted on each of its {row.attempts} attempts (worker lost)"
        )
        finished = await self.finish(row, "error", error=(code, message), only_lapsed=True)
        if finished is not None:
            await self.after_terminal(finished)

    async def heartbeat(
        self, job_id: str, attempt: int, *, progress: float, stage: str | None, duration: float | None
    ) -> bool:
        """Renew the lease and commit progress (never lowered); False once the job is not ours any more."""
        values: dict[str, Any] = {
            "lease_expires_at": _now() + timedelta(seconds=self.lease),
            "progress": sa.func.greatest(jobs.c.progress, min(1.0, max(0.0, progress))),
        }
        if stage is not None:
            values["stage"] = stage
        if duration is not None:
            values["audio_duration"] = sa.func.coalesce(jobs.c.audio_duration, round(duration, 3))
        async with self.auto.connect() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing", jobs.c.attempts == attempt)
                .values(**values)
            )
        return bool(done.rowcount)

    async def park(self, job_id: str, attempt: int, *, delay: float, code: str, message: str) -> bool:
        """After a transient failure: stay `processing`, runnable again in `delay` s (the last error kept)."""
        due = _now() + timedelta(seconds=delay)
        async with self.auto.connect() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing", jobs.c.attempts == attempt)
                .values(lease_expires_at=due, enqueued_at=due, error_code=code, error_message=message)
            )
        return bool(done.rowcount)

    async def release(self, job_id: str, attempt: int) -> None:
        """Give the lease up now (the worker is stopping): the job may run again at once."""
        async with self.db.begin() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing", jobs.c.attempts == attempt)
                .values(lease_expires_at=_now(), enqueued_at=None)
            )

    # -- terminal states -------------------------------------------------------------------

    async def finish(
        self,
        snapshot: Any,
        status: str,
        *,
        attempt: int | None = None,
        tenant_id: str | None = None,
        result: dict[str, Any] | None = None,
        warnings: Sequence[dict[str, str]] | None = None,
        error: tuple[str, str] | None = None,
        audio_duration: float | None = None,
        audio_path: str | None = None,
        metered: Metered | None = None,
        only_lapsed: bool = False,
    ) -> Finished | None:
        """Move an active job to `status` (guarded); None if it was already terminal or not ours.

        `snapshot` is the job's row as its caller last read it (ids, webhook, metadata, audio path).
        The UPDATE, the usage events and the webhook delivery are one statement (data-modifying
        CTEs), so they commit together in one round trip.
        """
        job_id = snapshot.id
        now = _now()
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
        # Audio not retained is forgotten in this same UPDATE and its file deleted after the commit
        # (a crash in between leaves an orphan file, which the retention purge removes).
        path = sa.literal(audio_path) if audio_path is not None else jobs.c.audio_path
        kept = sa.and_(path.is_not(None), jobs.c.audio_retention_hours > 0)
        values["audio_path"] = sa.case((kept, path), else_=sa.null())
        values["audio_expires_at"] = sa.case(
            (kept, now + sa.func.make_interval(0, 0, 0, 0, jobs.c.audio_retention_hours)), else_=sa.null()
        )
        if status == "completed":
            values.update(progress=1.0, result=result, warnings=list(warnings or []), error_code=None,
                          error_message=None)
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
        if metered is not None:
            side.append(usage_events.insert().from_select(USAGE_COLUMNS, _usage_source(
                usage_rows(snapshot, status, metered, now), done
            )).cte("usage"))
        err = {"code": error[0], "message": error[1]} if status == "error" and error else None
        delivery = delivery_insert(done, snapshot, status, err, now)
        if delivery is not None:
            side.append(delivery)
        delivery_id = sa.select(delivery.c.id).scalar_subquery() if delivery is not None else sa.null()
        stmt = sa.select(done, delivery_id.label("delivery_id")).add_cte(*side)
        async with self.auto.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        released = snapshot.audio_path if snapshot.audio_path and snapshot.audio_path != row.audio_path else None
        if audio_path is not None and audio_path != row.audio_path:
            released = audio_path  # a fetched file that was to be retained, but the job keeps no audio
        return Finished(row, row.delivery_id, released)

    async def record_usage(self, row: Any, status: str, metered: Metered) -> None:
        """Usage of a job that someone else moved to its terminal state (cancelled while running)."""
        async with self.db.begin() as conn:
            await conn.execute(usage_events.insert(), usage_rows(row, status, metered, _now()))

    async def cancel(self, tenant_id: str, job_id: str, kind: str | None = None) -> Any:
        """Cancel a queued or processing job of the tenant; 404 unknown, 409 not_cancellable when terminal."""
        current = await self.store.get(tenant_id, job_id, kind)
        finished = await self.finish(current, "cancelled", tenant_id=tenant_id)
        if finished is None:
            current = await self.store.get(tenant_id, job_id, kind)
            raise Conflict(f"Job {job_id} is already {current.status} and cannot be cancelled", code="not_cancellable")
        await self.after_terminal(finished)
        return finished.row

    async def after_terminal(self, finished: Finished) -> None:
        """Send the webhook, give the concurrency slot back, remove audio not retained, observe the
        job's duration (all best effort).

        Every terminal transition that happened (a `finish` that returned) is followed by this, so
        it is the one place where jobs are observed; the metric comes last, after what matters.
        """
        row = finished.row
        if finished.delivery_id is not None:
            try:
                await self.queue.enqueue(DELIVER_ACTOR, finished.delivery_id)
            except Exception as exc:  # the sweeper enqueues pending deliveries it finds
                log.warning("delivery %s not enqueued (%s); the sweeper will", finished.delivery_id, type(exc).__name__)
        await self.limiter.release_slot(row.key_id, row.id)
        if finished.released_audio is not None:
            await anyio.to_thread.run_sync(_unlink, finished.released_audio)
        if self.pod is not None:  # never raises
            await self.pod.record_job(row)

    async def remove_audio(self, job_id: str, path: str) -> None:
        """Delete a job's audio file, then forget its path."""
        await anyio.to_thread.run_sync(_unlink, path)
        async with self.db.begin() as conn:
            await conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.audio_path == path).values(audio_path=None)
            )

    async def audio_limit(self, key_id: str, default: int) -> int:
        """The key's audio_seconds_per_hour (its own, else the server default)."""
        async with self.db.connect() as conn:
            value = (
                await conn.execute(sa.select(api_keys.c.audio_seconds_per_hour).where(api_keys.c.id == key_id))
            ).scalar_one_or_none()
        return default if value is None else int(value)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

