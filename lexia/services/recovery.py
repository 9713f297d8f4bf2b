"""The sweeper: nothing committed is lost when a message is lost or a worker dies.

- An async job still `queued` long after its last enqueue (the API crashed between commit and
  enqueue, or the worker holding its message was killed) is enqueued again; the wait doubles
  with each re-enqueue, so a long queue does not fill up with copies.
- An async job `processing` whose lease has lapsed (its worker died) is enqueued again at once;
  the actor's claim increments its attempts and fails it after LEXIA_JOB_MAX_ATTEMPTS.
- A sync job whose lease lapsed lost its API process (and its audio): it ends in `error`.
- A due webhook delivery whose message was lost is enqueued again.
- A concurrency slot still held by a job that has ended (its release failed, e.g. while Redis
  was down) is given back, so the key does not lose that slot until the slot's long lease ends.

Duplicate messages are harmless: a claim is a guarded UPDATE, so only one copy runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import jobs, webhook_deliveries
from lexia.services.jobs import DELIVER_ACTOR, RUN_ACTOR, JobQueue
from lexia.services.lifecycle import Lifecycle

log = logging.getLogger("lexia.sweeper")

BATCH = 500
MAX_DOUBLINGS = 6


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    jobs_enqueued: int = 0
    sync_failed: int = 0
    deliveries_enqueued: int = 0
    slots_released: int = 0


class Sweeper:
    """Finds stranded jobs and deliveries and enqueues them again."""

    def __init__(self, lifecycle: Lifecycle, queue: JobQueue, *, requeue_after: float) -> None:
        self.lifecycle = lifecycle
        self.db: AsyncEngine = lifecycle.db
        self.queue = queue
        self.requeue_after = requeue_after

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass over jobs and deliveries."""
        moment = now or datetime.now(UTC)
        enqueued = await self._requeue_jobs(moment)
        failed = await self._fail_lost_sync(moment)
        deliveries = await self._requeue_deliveries(moment)
        slots = await self._release_finished_slots()
        if enqueued or failed or deliveries or slots:
            log.warning(
                "sweeper: %d jobs enqueued again, %d sync jobs lost, %d deliveries enqueued again, "
                "%d slots of ended jobs released",
                enqueued, failed, deliveries, slots,
            )
        return SweepReport(enqueued, failed, deliveries, slots)

    async def _release_finished_slots(self) -> int:
        """Give back slots whose holder is a job in a terminal state.

        Holders that are not jobs (the `/v1/audio/*` calls) or whose row does not exist yet (a
        request still being received) are left alone; they end with their own short leases.
        """
        limiter = self.lifecycle.limiter
        try:
            holders = await limiter.slot_holders()
        except (RedisError, OSError) as exc:
            log.warning("sweeper: slots not checked (%s)", type(exc).__name__)
            return 0
        owners = {holder: key_id for key_id, held in holders.items() for holder in held}
        if not owners:
            return 0
        ids = list(owners)
        ended: list[str] = []
        async with self.db.connect() as conn:
            for start in range(0, len(ids), BATCH):
                query = sa.select(jobs.c.id).where(
                    jobs.c.id.in_(ids[start : start + BATCH]), jobs.c.status.not_in(("queued", "processing"))
                )
                ended += (await conn.execute(query)).scalars().all()
        for job_id in ended:
            await limiter.release_slot(owners[job_id], job_id)
        return len(ended)

    async def _requeue_jobs(self, moment: datetime) -> int:
        doublings = sa.func.least(sa.func.greatest(jobs.c.enqueues - 1, 0), MAX_DOUBLINGS)
        backoff = sa.func.make_interval(0, 0, 0, 0, 0, 0, self.requeue_after * sa.func.power(2, doublings))
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
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            jobs.update()
            .where(jobs.c.id.in_(candidates.scalar_subquery()))
            .values(enqueued_at=moment, enqueues=jobs.c.enqueues + 1)
            .returning(jobs.c.id, jobs.c.kind)
        )
        async with self.db.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        for row in rows:
            await self.queue.enqueue(RUN_ACTOR[row.kind], row.id)
        return len(rows)

    async def _fail_lost_sync(self, moment: datetime) -> int:
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(jobs)
                    .where(jobs.c.mode == "sync", jobs.c.status == "processing", jobs.c.lease_expires_at < moment)
                    .limit(BATCH)
                )
            ).all()
        count = 0
        for row in rows:
            finished = await self.lifecycle.finish(
                row, "error", error=("internal_error", "The server stopped before the job finished"),
                only_lapsed=True,
            )
            if finished is not None:
                count += 1
                await self.lifecycle.after_terminal(finished)
        return count

    async def _requeue_deliveries(self, moment: datetime) -> int:
        grace = timedelta(seconds=self.requeue_after)
        candidates = (
            sa.select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at < moment - grace)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id.in_(candidates.scalar_subquery()))
            .values(next_attempt_at=moment)
            .returning(webhook_deliveries.c.id)
        )
        async with self.db.begin() as conn:
            ids = (await conn.execute(stmt)).scalars().all()
        for delivery_id in ids:
            await self.queue.enqueue(DELIVER_ACTOR, delivery_id)
        return len(ids)
