"""build_services(): the one place the services of a process are assembled (API, worker, tests).

Everything that holds a connection, a task or a client is opened here and closed in reverse
order when the context ends; the entry points only choose the engines, the queue and the role.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx
import redis.asyncio as aioredis

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db import Database, open_db
from lexia.db.jobs import JobTable
from lexia.db.keys import KeyTable, TenantTable
from lexia.db.rows import JobRow
from lexia.db.usage import UsageTable
from lexia.db.webhooks import DeliveryTable, SecretTable
from lexia.engines.base import Engines
from lexia.metrics import Metrics
from lexia.netguard import NetGuard
from lexia.services.access.keys import LIMIT_NAMES, ApiKey, KeyService, with_limits
from lexia.services.access.limits import RedisLimiter
from lexia.services.access.tenants import TenantService
from lexia.services.access.usage import UsageRecorder, UsageReports
from lexia.services.drain import Drain
from lexia.services.health import Health
from lexia.services.jobs.execution import JobRunner
from lexia.services.jobs.kinds import KINDS, JobQueue
from lexia.services.jobs.lifecycle import Lifecycle, Metered
from lexia.services.jobs.recovery import Sweeper
from lexia.services.jobs.retention import Retention
from lexia.services.jobs.store import JobStore
from lexia.services.jobs.submission import Submissions
from lexia.services.jobs.sync import SyncJobs
from lexia.services.llm.chat import LLMService
from lexia.services.podmetrics import PodMetrics
from lexia.services.speech.calls import AudioCalls
from lexia.services.speech.intake import AudioIntake
from lexia.services.webhooks.deliveries import Deliverer, DeliveryLog
from lexia.services.webhooks.signing import SecretStore
from lexia.settings import Settings
from lexia.storage import open_store

Role = Literal["api", "worker"]
# Redis waits: the API answers requests (and fails open quickly); the worker can wait longer.
_REDIS_TIMEOUT: Mapping[Role, float] = {"api": 0.5, "worker": 5.0}


def process_name(role: Role) -> str:
    """`api:host:pid` or `host:pid`: this process as the owner of the jobs it runs."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"api:{name}" if role == "api" else name


@dataclass
class Services:
    """The services of one process, built once by build_services()."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    engines: Engines
    queue: JobQueue
    clock: Clock
    metrics: Metrics
    keys: KeyService
    tenants: TenantService
    limiter: RedisLimiter
    usage: UsageRecorder
    usage_reports: UsageReports
    pod: PodMetrics
    llm: LLMService
    intake: AudioIntake
    jobs: JobStore
    lifecycle: Lifecycle
    runner: JobRunner
    sync_jobs: SyncJobs
    submissions: Submissions
    retention: Retention
    sweeper: Sweeper
    deliveries: DeliveryLog
    deliverer: Deliverer
    secrets: SecretStore
    health: Health
    audio_calls: AudioCalls
    drain: Drain
    started_at: float = field(default_factory=time.time)
    _limits: dict[str, tuple[ApiKey, dict[str, int]]] = field(default_factory=dict)

    def limits_of(self, key: ApiKey) -> dict[str, int]:
        """The key's effective limits, computed once per cached key object."""
        cached = self._limits.get(key.id)
        if cached is not None and cached[0] is key:
            return cached[1]
        defaults = self.settings.limits
        limits = with_limits(key, {name: getattr(defaults, name) for name in LIMIT_NAMES})
        if len(self._limits) > 100_000:
            self._limits.clear()
        self._limits[key.id] = (key, limits)
        return limits


def _audio_counter(metrics: Metrics) -> Callable[[JobRow, Metered], None]:
    """lexia_audio_seconds_total of jobs that end in this process."""

    def count(row: JobRow, metered: Metered) -> None:
        kind = KINDS[row.kind]
        metrics.audio_seconds.labels(kind.usage_kind).inc(metered.seconds)
        if metered.diarized and kind.usage_kind != "diarization":
            metrics.audio_seconds.labels("diarization").inc(metered.seconds)

    return count


@contextlib.asynccontextmanager
async def build_services(
    settings: Settings,
    engines: Engines,
    queue: JobQueue,
    *,
    role: Role = "api",
    clock: Clock = SYSTEM_CLOCK,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Services]:
    """Open the database, Redis and every service for one process; close them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        db = open_db(settings.data.database_url.reveal(), pool_size=settings.data.db_pool_size)
        stack.push_async_callback(db.dispose)
        timeout = _REDIS_TIMEOUT[role]
        redis = aioredis.from_url(
            settings.data.redis_url.reveal(), socket_timeout=timeout, socket_connect_timeout=timeout,
            max_connections=256,
        )
        stack.push_async_callback(redis.aclose)
        job_table, key_table, usage_table = JobTable(db), KeyTable(db), UsageTable(db)
        delivery_table = DeliveryTable(db)
        security = settings.security
        keys = KeyService(
            key_table, pepper=security.key_pepper.reveal(), previous_pepper=security.key_pepper_previous.reveal(),
            cache_seconds=security.key_cache_seconds, clock=clock,
        )
        usage = UsageRecorder(
            usage_table, flush_interval=settings.usage.flush_interval_seconds, batch_size=settings.usage.batch_size,
            after_flush=keys.flush_last_used,
        )
        usage.start()
        stack.push_async_callback(usage.stop)
        limits = settings.limits
        limiter = RedisLimiter(
            redis, enabled=limits.enabled, fail_open=limits.fail_open,
            concurrency_retry_after=limits.concurrency_retry_after_seconds,
            lease_fraction=limits.lease_fraction, lease_seconds=limits.lease_seconds, clock=clock,
        )
        stack.push_async_callback(limiter.close)
        metrics = Metrics(per_key=settings.server.metrics_per_key)
        pod = PodMetrics(redis)
        guard = NetGuard(settings.audio.ssrf_allowlist)
        audio_store = open_store(settings.audio)
        intake = AudioIntake(settings.audio, guard, store=audio_store, transport=http_transport)
        tenants = TenantService(
            TenantTable(db), audio_hours=settings.retention.audio_hours, result_days=settings.retention.result_days
        )
        lifecycle = Lifecycle(
            job_table, queue, limiter, keys=key_table, usage=usage_table, lease_seconds=settings.jobs.lease_seconds,
            max_attempts=settings.jobs.max_attempts, pod=pod, on_metered=_audio_counter(metrics),
            audio=audio_store, clock=clock,
        )
        name = process_name(role)
        runner = JobRunner(lifecycle, engines, intake, settings, worker=name)
        sync_jobs = SyncJobs(runner, lifecycle.store, timeout=settings.audio.sync_timeout_seconds)
        stack.push_async_callback(sync_jobs.aclose)
        drain = Drain()
        drain.on_expiry(sync_jobs.stop_all)
        secrets = SecretStore(SecretTable(db), grace_hours=settings.webhooks.secret_grace_hours, clock=clock)
        deliverer = Deliverer(
            delivery_table, secrets, queue, guard, timeout=settings.webhooks.timeout_seconds,
            delays=settings.webhooks.retry_delays(), transport=http_transport, pod=pod, clock=clock,
        )
        stack.push_async_callback(deliverer.aclose)
        yield Services(
            settings=settings,
            db=db,
            redis=redis,
            engines=engines,
            queue=queue,
            clock=clock,
            metrics=metrics,
            keys=keys,
            tenants=tenants,
            limiter=limiter,
            usage=usage,
            usage_reports=UsageReports(usage_table, clock),
            pod=pod,
            llm=LLMService(engines.llm, settings.engines.llm, on_queue_change=metrics.llm_queue.set),
            intake=intake,
            jobs=lifecycle.store,
            lifecycle=lifecycle,
            runner=runner,
            sync_jobs=sync_jobs,
            submissions=Submissions(
                job_table, redis, queue, limiter=limiter, intake=intake, tenants=tenants, sync_jobs=sync_jobs,
                settings=settings, worker=name, clock=clock,
            ),
            retention=Retention(lifecycle, storage_dir=settings.audio.storage_dir),
            sweeper=Sweeper(lifecycle, delivery_table, queue, requeue_after=settings.jobs.requeue_after_seconds),
            deliveries=DeliveryLog(delivery_table, queue, clock),
            deliverer=deliverer,
            secrets=secrets,
            health=Health(db, redis, engines, metrics),
            audio_calls=AudioCalls(engines, intake, limiter, settings, drain),
            drain=drain,
        )
