"""Job submission (§4.4, §5, §1.7, §8.4): admission, idempotency, storing the audio, commit, enqueue.

`Submitter.admit` runs before the body is received: a known Idempotency-Key skips the limits
(its request is compared once the body is in); otherwise the key's in-progress lock, the
global queue cap (503 overloaded) and one of the key's concurrency slots (429) are taken. The
slot is held by the job id until the job's terminal state gives it back. `Admission.submit`
validates what the body asks for, commits the row (`queued` for async jobs) and only then
enqueues its id; if the enqueue fails, the sweeper finds the committed job and enqueues it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.audio import probe
from lexia.db.tables import jobs, tenants
from lexia.engines.base import Audio
from lexia.errors import Overloaded
from lexia.ids import new_id
from lexia.intake import Spool, StoredAudio
from lexia.netguard import NetGuard, ResolveError
from lexia.services.idempotency import KeyLock, fingerprint, reused
from lexia.services.jobs import PREFIX, RUN_ACTOR, JobQueue, JobStore
from lexia.services.keys import ApiKey
from lexia.services.limits import RedisLimiter
from lexia.services.tenants import TenantService
from lexia.services.webhooks import check_webhook
from lexia.settings import Settings

log = logging.getLogger("lexia.jobs")

QUEUE_FULL_RETRY_AFTER = 5
DEPTH_TTL = 0.5


def queue_full(cap: int) -> Overloaded:
    """503 overloaded: LEXIA_QUEUE_MAX_DEPTH jobs are waiting."""
    return Overloaded(f"The job queue is full ({cap} jobs waiting); retry later", retry_after=QUEUE_FULL_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated job request, as the route received it."""

    kind: str
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


@dataclass(frozen=True, slots=True)
class Submitted:
    """The job created (or replayed) and its queue position."""

    row: Any
    replayed: bool = False
    queue_position: int | None = None


class Submitter:
    """Creates jobs for one app: database, Redis, queue, limiter and settings."""

    def __init__(
        self,
        db: AsyncEngine,
        redis: aioredis.Redis,
        queue: JobQueue | None,
        limiter: RedisLimiter,
        settings: Settings,
        *,
        worker: str,
    ) -> None:
        self.db = db
        self.redis = redis
        self.queue = queue
        self.limiter = limiter
        self.settings = settings
        self.worker = worker
        self.store = JobStore(db)
        self.auto = db.execution_options(isolation_level="AUTOCOMMIT")
        self._depth: tuple[float, int] = (-DEPTH_TTL, 0)
        self.tenants = TenantService(
            db, audio_hours=settings.retention.audio_hours, result_days=settings.retention.result_days
        )

    @property
    def cap(self) -> int:
        """LEXIA_QUEUE_MAX_DEPTH (0 = no cap)."""
        return self.settings.jobs.queue_max_depth

    async def queue_depth(self) -> int:
        """Queued jobs, counted at most every DEPTH_TTL s (a fast refusal before a body is received;
        the insert re-checks it exactly)."""
        now = time.monotonic()
        if now - self._depth[0] > DEPTH_TTL:
            self._depth = (now, await self.store.queued_count())
        return self._depth[1]

    def admit(
        self, key: ApiKey, limits: dict[str, int], kind: str, idempotency_key: str | None, *, owner: str,
        mode: str = "async",
    ) -> Admission:
        """An admission for one request (use as `async with`)."""
        return Admission(self, key, limits, kind, idempotency_key, owner=owner, mode=mode)

    async def find_idempotent(self, tenant_id: str, idempotency_key: str) -> Any:
        """The live job created with this key, if any."""
        async with self.db.connect() as conn:
            return (
                await conn.execute(
                    sa.select(jobs).where(
                        jobs.c.tenant_id == tenant_id,
                        jobs.c.idempotency_key == idempotency_key,
                        jobs.c.idempotency_expires_at > datetime.now(UTC),
                    )
                )
            ).first()


class Admission:
    """One request's hold on an idempotency key, the queue and a concurrency slot."""

    def __init__(
        self,
        submitter: Submitter,
        key: ApiKey,
        limits: dict[str, int],
        kind: str,
        idempotency_key: str | None,
        *,
        owner: str,
        mode: str,
    ) -> None:
        self.s = submitter
        self.key = key
        self.limits = limits
        self.kind = kind
        self.mode = mode
        self.idempotency_key = idempotency_key
        self.job_id = new_id(PREFIX[kind])
        self.existing: Any = None
        self.slots_held: int | None = None
        self.created = False
        self._lock = KeyLock(submitter.redis, key.tenant_id, idempotency_key, owner) if idempotency_key else None
        self._moved: Path | None = None

    async def __aenter__(self) -> Admission:
        if self.idempotency_key is not None and self._lock is not None:
            self.existing = await self.s.find_idempotent(self.key.tenant_id, self.idempotency_key)
            if self.existing is not None:
                return self  # a replay or a reuse: decided from the body, no new work admitted
            await self._lock.acquire()
        try:
            if self.mode == "async" and await self.s.queue_depth() >= self.s.cap > 0:
                raise queue_full(self.s.cap)
            jobs_settings = self.s.settings.jobs
            lease = jobs_settings.timeout_seconds * jobs_settings.max_attempts + 86_400
            self.slots_held = await self.s.limiter.acquire_slot(
                self.key.id, self.job_id, self.limits["max_concurrent_jobs"], lease
            )
        except BaseException:
            await self._release()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._release()

    async def _release(self) -> None:
        if self.slots_held is not None and not self.created:
            await self.s.limiter.release_slot(self.key.id, self.job_id)
            self.slots_held = None
        if self._moved is not None and not self.created:
            await anyio.to_thread.run_sync(_unlink, self._moved)
            self._moved = None
        if self._lock is not None:
            await self._lock.release()

    def replay_of(self, request: JobRequest) -> Any:
        """The existing job when this request repeats it; 409 idempotency_key_reused if it differs."""
        if self.existing is None:
            return None
        if self.existing.idempotency_fingerprint != self._fingerprint(request):
            raise reused()
        return self.existing

    def _fingerprint(self, request: JobRequest) -> str:
        return fingerprint(request.route, request.fields, request.audio.sha256 if request.audio else None)

    async def submit(
        self, request: JobRequest, spool: Spool, *, audio: Audio | None = None, lease_seconds: float | None = None
    ) -> Submitted:
        """Validate sources and webhook, store the audio, commit the job, enqueue it (async).

        A sync job's row is leased for `lease_seconds` (default LEXIA_JOB_LEASE_SECONDS, for
        runners that renew it).
        """
        replay = self.replay_of(request)
        if replay is not None:
            return await self._replayed(replay.id)
        settings = self.s.settings
        guard = NetGuard(settings.audio.ssrf_allowlist)
        if request.audio_url is not None:
            with contextlib.suppress(ResolveError):  # fetched (and vetted again) by the worker
                await guard.vet(request.audio_url, param="audio_url")
        await check_webhook(
            guard, request.webhook_url, request.webhook_auth_header_name, request.webhook_auth_header_value
        )
        duration = audio.duration if audio is not None else None
        if request.audio is not None and audio is None:
            upload = request.audio
            info = await anyio.to_thread.run_sync(
                lambda: probe(upload.path, max_seconds=settings.audio.max_audio_seconds, param="file")
            )
            duration = info.duration
        audio_hours: int | None = request.audio_retention_hours
        result_days: int | None = request.result_retention_days
        if self.mode != "async" and audio_hours is None:  # a sync upload is kept only if retained
            audio_hours = (await self.s.tenants.get(self.key.tenant_id)).audio_retention_hours
        if duration is not None and request.audio is not None and audio is None:  # sync routes debit decoded audio
            await self.s.limiter.debit(self.key.id, "audio", duration, self.limits["audio_seconds_per_hour"])
        audio_path: str | None = None
        keep_file = request.audio is not None and (self.mode == "async" or bool(audio_hours))
        if keep_file and request.audio is not None:
            target = Path(settings.audio.storage_dir) / self.key.tenant_id / f"{self.job_id}.audio"
            await anyio.to_thread.run_sync(_move, request.audio.path, target)
            spool.keep(request.audio.path)
            self._moved = target
            audio_path = str(target)
        row = await self._insert(request, audio_path, duration, audio_hours, result_days, lease_seconds=lease_seconds)
        if row is None:  # another request with the same key won the race
            existing = await self.s.find_idempotent(self.key.tenant_id, self.idempotency_key or "")
            if existing is None or existing.idempotency_fingerprint != self._fingerprint(request):
                raise reused()
            return await self._replayed(existing.id)
        self.created = True
        self._moved = None
        if self.mode != "async":
            return Submitted(row)
        if self.s.queue is None:
            log.warning("no job queue configured; job %s waits for the sweeper", row.id)
        else:
            try:
                await self.s.queue.enqueue(RUN_ACTOR[self.kind], row.id)
            except Exception as exc:  # committed: the sweeper enqueues it
                log.warning("job %s not enqueued (%s); the sweeper will", row.id, type(exc).__name__)
        return Submitted(row, queue_position=row.queue_position)

    async def _replayed(self, job_id: str) -> Submitted:
        row = await self.s.store.get(self.key.tenant_id, job_id)
        positions = await self.s.store.queue_positions([row])
        return Submitted(row, replayed=True, queue_position=positions.get(row.id))

    async def _insert(
        self,
        request: JobRequest,
        audio_path: str | None,
        duration: float | None,
        audio_hours: int | None,
        result_days: int | None,
        *,
        lease_seconds: float | None = None,
    ) -> Any:
        """Insert the row (tenant retention defaults and the queue position resolved in the same statement)."""
        now = datetime.now(UTC)
        retention = self.s.settings.retention
        tenant = sa.select(tenants).where(tenants.c.id == self.key.tenant_id).subquery()
        earlier = jobs.alias("earlier")
        position = (
            sa.select(sa.func.count())
            .select_from(earlier)
            .where(earlier.c.status == "queued", sa.tuple_(earlier.c.created_at, earlier.c.id) < (now, self.job_id))
            .scalar_subquery()
            + 1
        )
        sync = self.mode != "async"
        ttl = self.s.settings.jobs.idempotency_ttl_seconds
        values: dict[str, Any] = {
            "id": self.job_id,
            "tenant_id": self.key.tenant_id,
            "key_id": self.key.id,
            "kind": self.kind,
            "mode": self.mode,
            "status": "processing" if sync else "queued",
            "stage": ("diarizing" if self.kind == "diarization" else "transcribing") if sync else "queued",
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
            "audio_retention_hours": audio_hours if audio_hours is not None else sa.func.coalesce(
                sa.select(tenant.c.audio_retention_hours).scalar_subquery(), retention.audio_hours
            ),
            "result_retention_days": result_days if result_days is not None else sa.func.coalesce(
                sa.select(tenant.c.result_retention_days).scalar_subquery(), retention.result_days
            ),
            "idempotency_key": self.idempotency_key,
            "idempotency_fingerprint": self._fingerprint(request) if self.idempotency_key else None,
            "idempotency_expires_at": now + timedelta(seconds=ttl) if self.idempotency_key else None,
            "created_at": now,
            "started_at": now if sync else None,
            "lease_expires_at": (
                now + timedelta(seconds=lease_seconds or self.s.settings.jobs.lease_seconds) if sync else None
            ),
            "worker": self.s.worker if sync else None,
            "enqueued_at": None if sync else now,
            "enqueues": 0 if sync else 1,
        }
        # One INSERT … SELECT: the queue cap is checked, the tenant's retention defaults and the
        # queue position resolved, all in the statement that creates the row (autocommit).
        columns: list[Any] = [
            v if isinstance(v, sa.ClauseElement) else sa.literal(v, jobs.c[k].type) for k, v in values.items()
        ]
        source = sa.select(*columns)
        if not sync and self.s.cap > 0:
            depth = sa.select(sa.func.count()).where(jobs.c.status == "queued").scalar_subquery()
            source = source.where(depth < self.s.cap)
        inserted = jobs.insert().from_select(list(values), source).returning(
            jobs, (position if not sync else sa.null()).label("queue_position")
        )
        try:
            if self.idempotency_key is None:
                async with self.s.auto.connect() as conn:
                    row = (await conn.execute(inserted)).first()
            else:
                async with self.s.db.begin() as conn:
                    await conn.execute(  # an expired key may be used again
                        jobs.update()
                        .where(
                            jobs.c.tenant_id == self.key.tenant_id,
                            jobs.c.idempotency_key == self.idempotency_key,
                            jobs.c.idempotency_expires_at <= now,
                        )
                        .values(idempotency_key=None, idempotency_fingerprint=None, idempotency_expires_at=None)
                    )
                    row = (await conn.execute(inserted)).first()
            if row is None:
                self.s._depth = (time.monotonic(), self.s.cap)
                raise queue_full(self.s.cap)
            return row
        except IntegrityError:
            if self.idempotency_key is None:
                raise
            return None


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
