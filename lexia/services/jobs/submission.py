"""Job submission (§4.4, §5, §1.7, §8.4): admit → receive the audio → insert → enqueue, or run here.

A request opens one `JobSubmission` as `async with` before its body is read. Entering it takes
what admission needs: a known Idempotency-Key skips the limits (the request is compared with the
original once the body is in); otherwise the key's in-progress lock, the global queue cap (503
overloaded, async jobs) and one of the key's concurrency slots (429). The caller receives the
body into the submission's spool, then `submit` validates sources and webhook, stores the
upload, commits the row and enqueues its id (async) or decodes the audio and starts the run in
this process (sync). Leaving the block gives back whatever a request that created nothing held:
the slot, a moved file, the lock, the spool. A created job keeps its slot until its terminal
state gives it back; if the enqueue fails, the sweeper finds the committed job and enqueues it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

import redis.asyncio as aioredis

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db.jobs import JobTable
from lexia.db.rows import JobRow
from lexia.engines.base import Audio
from lexia.errors import Overloaded, ValidationFailed
from lexia.ids import new_id
from lexia.intake import FormData, StoredAudio
from lexia.services.access.idempotency import KeyLock, fingerprint, reused
from lexia.services.access.keys import ApiKey
from lexia.services.access.limits import RedisLimiter
from lexia.services.access.tenants import TenantService
from lexia.services.jobs.kinds import JobKind, JobQueue
from lexia.services.jobs.store import JobStore
from lexia.services.jobs.sync import SyncJobs, SyncRun
from lexia.services.speech.intake import AudioIntake
from lexia.services.webhooks.events import check_webhook
from lexia.settings import Settings

log = logging.getLogger("lexia.jobs")

QUEUE_FULL_RETRY_AFTER = 5
DEPTH_TTL = 0.5
Mode = Literal["async", "sync"]


def queue_full(cap: int) -> Overloaded:
    """503 overloaded: LEXIA_QUEUE_MAX_DEPTH jobs are waiting."""
    return Overloaded(f"The job queue is full ({cap} jobs waiting); retry later", retry_after=QUEUE_FULL_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated job request, as the route received it."""

    route: str
    fields: dict[str, Any]  # every form/JSON field as sent (the idempotency fingerprint)
    options: dict[str, Any]
    audio: StoredAudio | None = None
    audio_url: str | None = None
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None
    webhook_auth_header_value: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    audio_retention_hours: int | None = None
    result_retention_days: int | None = None

    def check_source(self) -> None:
        """Exactly one audio source: an uploaded file or an audio_url (422 param file)."""
        if (self.audio is None) == (self.audio_url is None):
            raise ValidationFailed("Send exactly one audio source: a file or an audio_url", param="file")


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job created (or replayed), its queue position, and its run when it runs here (sync)."""

    row: JobRow
    replayed: bool = False
    queue_position: int | None = None
    run: SyncRun | None = None


class Submissions:
    """Creates jobs for one process."""

    def __init__(
        self,
        table: JobTable,
        redis: aioredis.Redis,
        queue: JobQueue,
        *,
        limiter: RedisLimiter,
        intake: AudioIntake,
        tenants: TenantService,
        sync_jobs: SyncJobs,
        settings: Settings,
        worker: str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.table = table
        self.store = JobStore(table)
        self.redis = redis
        self.queue = queue
        self.limiter = limiter
        self.intake = intake
        self.tenants = tenants
        self.sync_jobs = sync_jobs
        self.settings = settings
        self.worker = worker
        self.clock = clock
        self._depth: tuple[float, int] = (-DEPTH_TTL, 0)

    @property
    def cap(self) -> int:
        """LEXIA_QUEUE_MAX_DEPTH (0 = no cap)."""
        return self.settings.jobs.queue_max_depth

    async def queue_depth(self) -> int:
        """Queued jobs, counted at most every DEPTH_TTL s (a fast refusal before a body is received;
        the insert re-checks it exactly)."""
        now = self.clock.monotonic()
        if now - self._depth[0] > DEPTH_TTL:
            self._depth = (now, await self.table.queued_count())
        return self._depth[1]

    def note_full(self) -> None:
        """The insert found the queue full: refuse fast until the next count."""
        self._depth = (self.clock.monotonic(), self.cap)

    def open(
        self, key: ApiKey, limits: dict[str, int], kind: JobKind, idempotency_key: str | None, *,
        mode: Mode, owner: str,
    ) -> JobSubmission:
        """One request's submission (use as `async with`)."""
        return JobSubmission(self, key, limits, kind, idempotency_key, mode=mode, owner=owner)


class JobSubmission:
    """One request's hold on an idempotency key, the queue, a concurrency slot and its spool."""

    def __init__(
        self,
        submissions: Submissions,
        key: ApiKey,
        limits: dict[str, int],
        kind: JobKind,
        idempotency_key: str | None,
        *,
        mode: Mode,
        owner: str,
    ) -> None:
        self.s = submissions
        self.key = key
        self.limits = limits
        self.kind = kind
        self.mode = mode
        self.idempotency_key = idempotency_key
        self.job_id = new_id(kind.prefix)
        self.existing: JobRow | None = None
        self.slots_held: int | None = None
        self.created = False
        self.spool = submissions.intake.spool()
        self._lock = KeyLock(submissions.redis, key.tenant_id, idempotency_key, owner) if idempotency_key else None
        self._moved: str | None = None

    async def __aenter__(self) -> JobSubmission:
        await self.spool.__aenter__()
        try:
            await self._admit()
        except BaseException:
            await self._release()
            raise
        return self

    async def _admit(self) -> None:
        if self.idempotency_key is not None and self._lock is not None:
            self.existing = await self.s.table.find_idempotent(
                self.key.tenant_id, self.idempotency_key, self.s.clock.now()
            )
            if self.existing is not None:
                return  # a replay or a reuse: decided from the body, no new work admitted
            await self._lock.acquire()
        if self.mode == "async" and await self.s.queue_depth() >= self.s.cap > 0:
            raise queue_full(self.s.cap)
        jobs_settings = self.s.settings.jobs
        lease = jobs_settings.timeout_seconds * jobs_settings.max_attempts + 86_400
        self.slots_held = await self.s.limiter.acquire_slot(
            self.key.id, self.job_id, self.limits["max_concurrent_jobs"], lease
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._release()

    async def _release(self) -> None:
        try:
            if self.slots_held is not None and not self.created:
                await self.s.limiter.release_slot(self.key.id, self.job_id)
                self.slots_held = None
            if self._moved is not None and not self.created:
                await self.s.intake.remove(self._moved)
                self._moved = None
            if self._lock is not None:
                await self._lock.release()
        finally:
            await self.spool.__aexit__(None, None, None)

    async def receive(
        self, chunks: AsyncIterator[bytes], *, content_type: str, content_length: int | None
    ) -> FormData:
        """A multipart body, its audio streamed into this submission's spool."""
        return await self.s.intake.receive(self.spool, chunks, content_type=content_type, content_length=content_length)

    def replay_of(self, request: JobRequest) -> JobRow | None:
        """The existing job when this request repeats it; 409 idempotency_key_reused if it differs."""
        if self.existing is None:
            return None
        if self.existing.idempotency_fingerprint != self._fingerprint(request):
            raise reused()
        return self.existing

    def _fingerprint(self, request: JobRequest) -> str:
        return fingerprint(request.route, request.fields, request.audio.sha256 if request.audio else None)

    async def submit(self, request: JobRequest) -> Submitted:
        """Validate sources and webhook, store the audio, commit the job; enqueue it or run it here."""
        request.check_source()
        replay = self.replay_of(request)
        if replay is not None:
            return await self._replayed(replay.id)
        settings = self.s.settings
        if request.audio_url is not None:
            await self.s.intake.vet_url(request.audio_url, param="audio_url")
        await check_webhook(
            self.s.intake.guard, request.webhook_url, request.webhook_auth_header_name,
            request.webhook_auth_header_value,
        )
        audio: Audio | None = None
        audio_hours = request.audio_retention_hours
        if self.mode == "sync":
            audio = await self._sync_audio(request)
            duration: float | None = audio.duration
            if audio_hours is None:  # a sync upload is kept only if the tenant retains audio
                audio_hours = (await self.s.tenants.get(self.key.tenant_id)).audio_retention_hours
        elif request.audio is not None:
            probed = await self.s.intake.probe(
                request.audio.path, max_seconds=settings.audio.max_audio_seconds, param="file"
            )
            duration = probed.duration
            if duration is not None:
                await self.s.limiter.debit(self.key.id, "audio", duration, self.limits["audio_seconds_per_hour"])
        else:
            duration = None  # known once the worker has fetched the URL
        audio_path = await self._store_upload(request, keep=self.mode == "async" or bool(audio_hours))
        inserted = await self.s.table.insert(
            self._values(request, audio_path, duration, audio_hours),
            retention_defaults=(settings.retention.audio_hours, settings.retention.result_days),
            queue_cap=self.s.cap,
            now=self.s.clock.now(),
        )
        if inserted.outcome == "full":
            self.s.note_full()
            raise queue_full(self.s.cap)
        if inserted.outcome == "duplicate":  # another request with the same key won the race
            existing = await self.s.table.find_idempotent(
                self.key.tenant_id, self.idempotency_key or "", self.s.clock.now()
            )
            if existing is None or existing.idempotency_fingerprint != self._fingerprint(request):
                raise reused()
            return await self._replayed(existing.id)
        row = inserted.row
        assert row is not None
        self.created = True
        self._moved = None
        if audio is not None:
            return Submitted(row, run=self.s.sync_jobs.start(row, audio))
        try:
            await self.s.queue.enqueue(self.kind.actor, row.id, queue=self.kind.queue)
        except Exception as exc:  # committed: marked unsent, the sweeper's next pass enqueues it
            log.warning("job %s not enqueued (%s); the sweeper will", row.id, type(exc).__name__)
            await self.s.table.mark_unsent(row.id)
        return Submitted(row, queue_position=inserted.queue_position)

    async def _sync_audio(self, request: JobRequest) -> Audio:
        """A sync job's audio: fetched if it came as a URL, decoded within the sync limit, debited."""
        settings = self.s.settings.audio
        stored = request.audio or await self.s.intake.fetch(self.spool, request.audio_url or "")
        param = "file" if request.audio is not None else "audio_url"
        audio = await self.s.intake.decode(stored.path, max_seconds=settings.sync_max_audio_seconds, param=param)
        await self.s.limiter.debit(self.key.id, "audio", audio.duration, self.limits["audio_seconds_per_hour"])
        return audio

    async def _store_upload(self, request: JobRequest, *, keep: bool) -> str | None:
        """Move a kept upload into job storage (it then outlives the spool)."""
        if request.audio is None or not keep:
            return None
        target = self.s.intake.job_location(self.key.tenant_id, self.job_id)
        await self.s.intake.keep(self.spool, request.audio.path, target)
        self._moved = target
        return target

    async def _replayed(self, job_id: str) -> Submitted:
        row = await self.s.store.row(self.key.tenant_id, job_id)
        positions = await self.s.store.positions([row])
        return Submitted(row, replayed=True, queue_position=positions.get(row.id))

    def _values(
        self, request: JobRequest, audio_path: str | None, duration: float | None, audio_hours: int | None
    ) -> dict[str, Any]:
        """The new row's columns (retention None: the tenant's default, resolved by the insert)."""
        now = self.s.clock.now()
        sync = self.mode == "sync"
        keyed = self.idempotency_key is not None
        lease = self.s.settings.jobs.lease_seconds
        return {
            "id": self.job_id,
            "tenant_id": self.key.tenant_id,
            "key_id": self.key.id,
            "kind": self.kind.name,
            "mode": self.mode,
            "status": "processing" if sync else "queued",
            "stage": self.kind.stage if sync else "queued",
            "progress": 0.0,
            "attempts": 1 if sync else 0,
            "options": request.options,
            "warnings": [],
            "audio_path": audio_path,
            "audio_url": request.audio_url,
            "audio_filename": request.audio.filename if request.audio is not None else None,
            "audio_duration": round(duration, 3) if duration is not None else None,
            "webhook_url": request.webhook_url,
            "webhook_auth_header_name": request.webhook_auth_header_name,
            "webhook_auth_header_value": request.webhook_auth_header_value,
            "metadata": dict(request.metadata),
            "audio_retention_hours": audio_hours,
            "result_retention_days": request.result_retention_days,
            "idempotency_key": self.idempotency_key,
            "idempotency_fingerprint": self._fingerprint(request) if keyed else None,
            "idempotency_expires_at": (
                now + timedelta(seconds=self.s.settings.jobs.idempotency_ttl_seconds) if keyed else None
            ),
            "created_at": now,
            "started_at": now if sync else None,
            "lease_expires_at": now + timedelta(seconds=lease) if sync else None,
            "worker": self.s.worker if sync else None,
            "enqueued_at": None if sync else now,
            "enqueues": 0 if sync else 1,
        }

