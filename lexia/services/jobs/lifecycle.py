"""Job state transitions: claim with a lease, heartbeat, park for a retry, and exactly one terminal state.

Every transition is one guarded UPDATE (lexia.db.jobs). A terminal transition writes, in the same
statement, the job's usage events and its webhook delivery; what follows it (`after_terminal`:
the delivery enqueued, the concurrency slot given back, audio not retained removed, the job
observed in the pod-wide duration histogram) runs after the commit, best effort, for every
terminal transition whoever made it (worker, API, sweeper, retention).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db.jobs import JobTable
from lexia.db.keys import KeyTable
from lexia.db.rows import JobRow
from lexia.db.usage import UsageTable
from lexia.errors import Conflict
from lexia.services.access.limits import RedisLimiter
from lexia.services.access.usage import UsageEvent, event_row
from lexia.services.jobs.kinds import KINDS, JobKind, JobQueue
from lexia.services.jobs.store import JobStore
from lexia.services.podmetrics import PodMetrics
from lexia.services.webhooks.events import DELIVER, new_delivery
from lexia.storage import BlobStore, DiskStore

log = logging.getLogger("lexia.jobs")

_STATUS_CODES = {"completed": 200, "cancelled": 499}


@dataclass(frozen=True, slots=True)
class Finished:
    """A terminal transition that happened: the row after it and the delivery to send."""

    row: JobRow
    delivery_id: str | None
    released_audio: str | None = None  # a file the row no longer references, to delete now
    metered: Metered | None = None


@dataclass(frozen=True, slots=True)
class Metered:
    """Audio a job processed (seconds), whether it diarized, and how long it took."""

    seconds: float = 0.0
    diarized: bool = False
    latency_ms: float = 0.0


def usage_events(row: JobRow, kind: JobKind, status: str, metered: Metered, at: datetime) -> list[dict[str, Any]]:
    """Usage events of a finished job: one of its kind, plus a diarization event for speaker labels."""
    base = UsageEvent(
        created_at=at,
        tenant_id=row.tenant_id,
        key_id=row.key_id,
        request_id=row.id,
        route=kind.path,
        method="POST",
        status=_STATUS_CODES.get(status, 500),
        latency_ms=round(metered.latency_ms, 3),
    )
    seconds = round(metered.seconds, 3)
    events = [_event(base, kind.usage_kind, seconds)]
    if metered.diarized and kind.usage_kind != "diarization":
        events.append(_event(base, "diarization", seconds))
    return [event_row(e) for e in events]


def _event(base: UsageEvent, usage_kind: str, seconds: float) -> UsageEvent:
    if usage_kind == "diarization":
        return replace(base, kind=usage_kind, diarization_seconds=seconds)
    return replace(base, kind=usage_kind, audio_seconds=seconds)


class Lifecycle:
    """Transitions of job rows and what follows a terminal one."""

    def __init__(
        self,
        table: JobTable,
        queue: JobQueue,
        limiter: RedisLimiter,
        *,
        keys: KeyTable,
        usage: UsageTable,
        lease_seconds: float,
        max_attempts: int,
        pod: PodMetrics | None = None,
        on_metered: Callable[[JobRow, Metered], None] | None = None,
        audio: BlobStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.table = table
        self.audio: BlobStore = audio or DiskStore(".")  # locations are absolute paths on disk
        self.store = JobStore(table)
        self.queue = queue
        self.limiter = limiter
        self.keys = keys
        self.usage = usage
        self.pod = pod  # records lexia_job_duration_seconds; None records nothing
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.clock = clock
        self.on_metered = on_metered  # this process's audio-seconds counter (the API's /metrics)

    # -- claim, heartbeat, park ------------------------------------------------------------

    async def claim(self, job_id: str, kind: JobKind, worker: str) -> JobRow | None:
        """Take an async job that is queued, or processing with a lapsed lease; None if not ours to run.

        A job whose lapsed attempts already reached LEXIA_JOB_MAX_ATTEMPTS is failed instead.
        """
        now = self.clock.now()
        row = await self.table.claim(
            job_id, kind.name, worker, now=now, lease=self.lease, max_attempts=self.max_attempts
        )
        if row is None:
            await self._fail_exhausted(job_id, now)
        return row

    async def _fail_exhausted(self, job_id: str, now: datetime) -> None:
        """A job whose worker was lost on every attempt ends in `error`."""
        row = await self.table.get(job_id)
        if (
            row is None
            or row.status != "processing"
            or row.lease_expires_at is None
            or row.lease_expires_at >= now
            or row.attempts < self.max_attempts
        ):
            return
        code = row.error_code or "internal_error"
        message = row.error_message or f"The job was interrupted on each of its {row.attempts} attempts (worker lost)"
        await self.end(row, "error", error=(code, message), only_lapsed=True)

    async def heartbeat(
        self, job_id: str, attempt: int, *, progress: float, stage: str | None, duration: float | None
    ) -> bool:
        """Renew the lease and commit progress (never lowered); False once the job is not ours any more."""
        until = self.clock.now() + self.lease
        return await self.table.heartbeat(
            job_id, attempt, lease_until=until, progress=progress, stage=stage, duration=duration
        )

    async def park(self, job_id: str, attempt: int, *, delay: float, code: str, message: str) -> bool:
        """After a transient failure: stay `processing`, runnable again in `delay` s (the last error kept)."""
        due = self.clock.now() + timedelta(seconds=delay)
        return await self.table.park(job_id, attempt, due=due, code=code, message=message)

    async def hand_back(self, row: JobRow) -> None:
        """Give the lease up now (this process is stopping) and enqueue the job again for another worker."""
        if await self.table.release(row.id, row.attempts, now=self.clock.now()):
            kind = KINDS[row.kind]
            try:
                await self.queue.enqueue(kind.actor, row.id, queue=kind.queue)
            except Exception as exc:  # its lease has lapsed: the sweeper enqueues it
                log.warning("job %s not enqueued again (%s); the sweeper will", row.id, type(exc).__name__)

    # -- terminal states -------------------------------------------------------------------

    async def finish(
        self,
        snapshot: JobRow,
        status: str,
        *,
        attempt: int | None = None,
        tenant_id: str | None = None,
        result: dict[str, Any] | None = None,
        warnings: Sequence[dict[str, str]] = (),
        error: tuple[str, str] | None = None,
        audio_duration: float | None = None,
        audio_path: str | None = None,
        metered: Metered | None = None,
        only_lapsed: bool = False,
    ) -> Finished | None:
        """Move an active job to `status` (guarded); None if it was already terminal or not ours.

        `snapshot` is the job's row as its caller last read it (ids, webhook, metadata, audio
        path); its usage events and webhook delivery are written by the same statement.
        """
        now = self.clock.now()
        kind = KINDS[snapshot.kind]
        err = {"code": error[0], "message": error[1]} if status == "error" and error else None
        ended = await self.table.finish(
            snapshot.id,
            status,
            now=now,
            attempt=attempt,
            tenant_id=tenant_id,
            only_lapsed=only_lapsed,
            result=result,
            warnings=warnings,
            error=error,
            audio_duration=audio_duration,
            audio_path=audio_path,
            usage=usage_events(snapshot, kind, status, metered, now) if metered is not None else (),
            delivery=new_delivery(snapshot, kind, status, err, now) if snapshot.webhook_url else None,
        )
        if ended is None:
            return None
        row = ended.row
        released = snapshot.audio_path if snapshot.audio_path and snapshot.audio_path != row.audio_path else None
        if audio_path is not None and audio_path != row.audio_path:
            released = audio_path  # a fetched file that was to be retained, but the job keeps no audio
        return Finished(row, ended.delivery_id, released, metered)

    async def end(self, snapshot: JobRow, status: str, **changes: Any) -> JobRow | None:
        """`finish` followed by `after_terminal`: the row after the transition, None if it did not happen."""
        finished = await self.finish(snapshot, status, **changes)
        if finished is None:
            return None
        await self.after_terminal(finished)
        return finished.row

    async def record_usage(self, row: JobRow, status: str, metered: Metered) -> None:
        """Usage of a job that someone else moved to its terminal state (cancelled while running)."""
        await self.usage.insert(usage_events(row, KINDS[row.kind], status, metered, self.clock.now()))
        if self.on_metered is not None:
            self.on_metered(row, metered)

    async def cancel(self, tenant_id: str, job_id: str, kind: JobKind | None = None) -> JobRow:
        """Cancel a queued or processing job of the tenant; 404 unknown, 409 not_cancellable when terminal."""
        current = await self.store.row(tenant_id, job_id, kind)
        ended = await self.end(current, "cancelled", tenant_id=tenant_id)
        if ended is None:
            current = await self.store.row(tenant_id, job_id, kind)
            raise Conflict(f"Job {job_id} is already {current.status} and cannot be cancelled", code="not_cancellable")
        return ended

    async def after_terminal(self, finished: Finished) -> None:
        """Send the webhook, give the concurrency slot back, remove audio not retained, observe the
        job's duration (all best effort; the metric comes last, after what matters)."""
        row = finished.row
        if finished.delivery_id is not None:
            try:
                await self.queue.enqueue(DELIVER.actor, finished.delivery_id, queue=DELIVER.queue)
            except Exception as exc:  # the sweeper enqueues pending deliveries it finds
                log.warning("delivery %s not enqueued (%s); the sweeper will", finished.delivery_id, type(exc).__name__)
        await self.limiter.release_slot(row.key_id, row.id)
        if finished.released_audio is not None:
            await self.audio.delete(finished.released_audio)
        if self.on_metered is not None and finished.metered is not None:
            self.on_metered(row, finished.metered)
        if self.pod is not None:  # never raises
            await self.pod.record_job(row)

    async def remove_audio(self, job_id: str, path: str) -> None:
        """Delete a job's stored audio, then forget its location."""
        await self.audio.delete(path)
        await self.table.forget_audio(job_id, path)

    async def audio_limit(self, key_id: str, default: int) -> int:
        """The key's audio_seconds_per_hour (its own, else the server default)."""
        own = await self.keys.audio_limit(key_id)
        return default if own is None else own

