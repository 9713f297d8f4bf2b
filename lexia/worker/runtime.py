"""The worker process's runtime: database, Redis, engines and job services, opened once per process.

Dramatiq runs async actors on one event loop per worker process (its AsyncIO middleware);
`RuntimeMiddleware` opens the runtime on that loop when the worker boots, so the engines are
loaded once per process and shared by every job, and closes it when the worker stops. The
runtime also runs the sweeper and the retention purge in the background; a Redis lock lets one
worker process do each pass while several run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import httpx
import msgspec
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware
from redis.exceptions import RedisError

from lexia.db import open_db
from lexia.engines.base import Engines
from lexia.engines.registry import open_engines
from lexia.netguard import NetGuard
from lexia.services.deliveries import Deliverer
from lexia.services.execution import JobRunner
from lexia.services.jobs import JobQueue
from lexia.services.lifecycle import Lifecycle
from lexia.services.limits import RedisLimiter
from lexia.services.podmetrics import PodMetrics
from lexia.services.recovery import Sweeper
from lexia.services.retention import Retention
from lexia.settings import Settings

log = logging.getLogger("lexia.worker")


@dataclass
class Parts:
    """The services of a started runtime."""

    runner: JobRunner
    deliverer: Deliverer
    sweeper: Sweeper
    retention: Retention
    engines: Engines


def worker_name() -> str:
    """`host:pid` of this process (stored as a running job's lease owner)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerRuntime:
    """Opens everything a worker needs once and runs the periodic sweeper and purge."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue: JobQueue,
        engines: Engines | None = None,
        background: bool = True,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self._given_engines = engines
        self._background = background
        self._transport = http_transport
        self._parts: Parts | None = None
        self._lock: asyncio.Lock | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.engine_loads = 0

    async def start(self) -> Parts:
        """Open the runtime (idempotent): database, Redis, engines (without the LLM), services."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._parts is not None:
                return self._parts
            settings = self.settings
            stack = contextlib.AsyncExitStack()
            db = open_db(settings.data.database_url.reveal(), pool_size=settings.data.db_pool_size)
            stack.push_async_callback(db.dispose)
            redis = aioredis.from_url(settings.data.redis_url.reveal(), socket_timeout=5, socket_connect_timeout=5)
            stack.push_async_callback(redis.aclose)
            engines = self._given_engines
            if engines is None:
                # The worker transcribes and diarizes; the LLM stays in the API process.
                wanted = msgspec.structs.replace(
                    settings.engines, llm=msgspec.structs.replace(settings.engines.llm, enabled=False)
                )
                engines = await stack.enter_async_context(open_engines(wanted))
                self.engine_loads += 1
            limiter = RedisLimiter(
                redis,
                enabled=settings.limits.enabled,
                fail_open=settings.limits.fail_open,
                concurrency_retry_after=settings.limits.concurrency_retry_after_seconds,
            )
            pod = PodMetrics(redis)
            lifecycle = Lifecycle(
                db, self.queue, limiter, lease_seconds=settings.jobs.lease_seconds,
                max_attempts=settings.jobs.max_attempts, pod=pod,
            )
            deliverer = Deliverer(
                db, self.queue, NetGuard(settings.audio.ssrf_allowlist),
                timeout=settings.webhooks.timeout_seconds, delays=settings.webhooks.retry_delays(),
                transport=self._transport, pod=pod,
            )
            stack.push_async_callback(deliverer.aclose)
            parts = Parts(
                runner=JobRunner(lifecycle, engines, settings, worker=worker_name(), fetch_transport=self._transport),
                deliverer=deliverer,
                sweeper=Sweeper(lifecycle, self.queue, requeue_after=settings.jobs.requeue_after_seconds),
                retention=Retention(lifecycle, storage_dir=settings.audio.storage_dir),
                engines=engines,
            )
            if self._background:
                self._tasks = [
                    asyncio.create_task(
                        self._every(settings.jobs.sweep_interval_seconds, "sweeper", redis, parts.sweeper.sweep)
                    ),
                    asyncio.create_task(
                        self._every(settings.retention.purge_interval_seconds, "purge", redis, parts.retention.purge)
                    ),
                ]
            self._stack = stack
            self._parts = parts
            log.info("worker runtime ready (engines: %s)", engines.mode)
            return parts

    async def stop(self) -> None:
        """Stop the background passes and close everything."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._parts = None

    async def _every(
        self, interval: float, name: str, redis: aioredis.Redis, step: Callable[[], Awaitable[Any]]
    ) -> None:
        """Run `step` every `interval` s in one process at a time (a Redis lock per pass)."""
        lock = f"lexia:worker:{name}"
        while True:
            try:
                if await redis.set(lock, worker_name(), nx=True, px=max(1, int(interval * 900))):
                    await step()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("%s pass skipped: Redis unreachable (%s)", name, type(exc).__name__)
            except Exception:
                log.exception("%s pass failed", name)
            await asyncio.sleep(interval)

    # -- what the actors call --------------------------------------------------------------

    async def run_job(self, kind: str, job_id: str) -> float | None:
        """Run one job; a retry delay in seconds after a transient failure."""
        parts = await self.start()
        return await parts.runner.run(kind, job_id)

    async def deliver(self, delivery_id: str) -> None:
        """One webhook delivery attempt if due."""
        parts = await self.start()
        await parts.deliverer.deliver(delivery_id)


class RuntimeMiddleware(Middleware):
    """Opens the runtime on Dramatiq's event loop at worker boot and closes it at shutdown."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Poll for messages every LEXIA_WORKER_POLL_SECONDS at most and prefetch one per thread.

        Dramatiq's consumer sleeps up to its worker timeout (1 s by default) whenever its prefetch
        is full or its queue empty, which would add up to a second between commit and start; and
        messages prefetched beyond the free threads only wait (and are stranded if the process
        dies). The `dramatiq_worker_timeout` / `dramatiq_queue_prefetch` variables still win.
        """
        if "dramatiq_worker_timeout" not in os.environ:
            worker.worker_timeout = max(1, int(self.runtime.settings.jobs.poll_seconds * 1000))
        if "dramatiq_queue_prefetch" not in os.environ:
            worker.queue_prefetch = worker.worker_threads

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Load engines and connect before the first message."""
        loop = get_event_loop_thread()
        if loop is not None:
            loop.run_coroutine(self.runtime.start())
        # What boot loaded lives as long as the process: keep it out of GC scans, which
        # otherwise make every full collection (PyAV decoding runs one) stall all jobs.
        gc.collect()
        gc.freeze()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Close (runs before the AsyncIO middleware stops the loop)."""
        loop = get_event_loop_thread()
        if loop is not None:
            loop.run_coroutine(self.runtime.stop())
