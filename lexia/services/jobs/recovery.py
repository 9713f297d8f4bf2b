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
from datetime import datetime, timedelta

from redis.exceptions import RedisError

from lexia.db.webhooks import DeliveryTable
from lexia.services.jobs.kinds import KINDS, JobQueue
from lexia.services.jobs.lifecycle import Lifecycle
from lexia.services.webhooks.events import DELIVER

log = logging.getLogger("lexia.sweeper")

BATCH = 500
MAX_DOUBLINGS = 6
# A due delivery nobody has claimed this long after its time lost its message (claims move the
# time ahead by the attempt's timeout, so a delivery in progress is never taken for lost).
DELIVERY_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    jobs_enqueued: int = 0
    sync_failed: int = 0
    deliveries_enqueued: int = 0
    slots_released: int = 0


class Sweeper:
    """Finds stranded jobs and deliveries and enqueues them again."""

    def __init__(
        self, lifecycle: Lifecycle, deliveries: DeliveryTable, queue: JobQueue, *, requeue_after: float
    ) -> None:
        self.lifecycle = lifecycle
        self.deliveries = deliveries
        self.queue = queue
        self.requeue_after = requeue_after

    async def sweep(self, now: datetime | None = None, *, lost_messages: bool = False) -> SweepReport:
        """One pass over jobs, deliveries and concurrency slots.

        `lost_messages`: the broker was unreachable or restarted, so every queued job and due
        delivery may have lost its message and is enqueued again now, whenever it was enqueued.
        """
        moment = now or self.lifecycle.clock.now()
        enqueued = await self._requeue_jobs(moment, 0.0 if lost_messages else self.requeue_after)
        failed = await self._fail_lost_sync(moment)
        deliveries = await self._requeue_deliveries(moment, 0.0 if lost_messages else DELIVERY_GRACE_SECONDS)
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
        ids = list(owners)
        ended: list[str] = []
        for start in range(0, len(ids), BATCH):
            ended += await self.lifecycle.table.ended(ids[start : start + BATCH])
        for job_id in ended:
            await limiter.release_slot(owners[job_id], job_id)
        return len(ended)

    async def _requeue_jobs(self, moment: datetime, requeue_after: float) -> int:
        stale = await self.lifecycle.table.requeue_stale(
            moment, requeue_after=requeue_after, max_doublings=MAX_DOUBLINGS, batch=BATCH
        )
        for job_id, kind_name in stale:
            kind = KINDS[kind_name]
            await self.queue.enqueue(kind.actor, job_id, queue=kind.queue)
        return len(stale)

    async def _fail_lost_sync(self, moment: datetime) -> int:
        count = 0
        for row in await self.lifecycle.table.lapsed_sync(moment, BATCH):
            error = ("internal_error", "The server stopped before the job finished")
            if await self.lifecycle.end(row, "error", error=error, only_lapsed=True) is not None:
                count += 1
        return count

    async def _requeue_deliveries(self, moment: datetime, grace: float) -> int:
        ids = await self.deliveries.requeue_due(moment, timedelta(seconds=grace), BATCH)
        for delivery_id in ids:
            await self.queue.enqueue(DELIVER.actor, delivery_id, queue=DELIVER.queue)
        return len(ids)
