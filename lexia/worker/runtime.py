"""The worker process's runtime: its services, opened once per process, and the periodic passes.

Dramatiq runs async actors on one event loop per worker process (its AsyncIO middleware);
`RuntimeMiddleware` opens the runtime on that loop when the worker boots, so the engines are
loaded once per process and shared by every job, and closes it when the worker stops. The
runtime also runs the sweeper and the retention purge in the background; a Redis lock lets one
worker process do each pass while several run. `Heartbeat` tells /ready a worker is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import httpx
import msgspec
import redis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware
from redis.exceptions import RedisError

from lexia.engines.base import Engines
from lexia.engines.registry import open_engines
from lexia.logs import Outage, log_loop_exception
from lexia.services.health import HEARTBEAT_KEY, is_outage
from lexia.services.jobs.kinds import JobKind, JobQueue
from lexia.services.wiring import Services, build_services, process_name
from lexia.settings import Settings

log = logging.getLogger("lexia.worker")

# After a PostgreSQL or Redis failure, a message is retried this much later (the outage is logged once).
OUTAGE_RETRY_SECONDS = 2.0


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
        self._services: Services | None = None
        self._lock: asyncio.Lock | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[float | None]] = set()  # job attempts in progress
        self._stopping = False
        self._outages: dict[str, Outage] = {}
        self._broker_gap = False  # Redis was unreachable (its messages may be lost)
        self._redis_run_id: str | None = None
        self.engine_loads = 0

    async def start(self) -> Services:
        """Open the runtime (idempotent): engines (without the LLM), database, Redis, services."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._services is not None:
                return self._services
            settings = self.settings
            asyncio.get_running_loop().set_exception_handler(log_loop_exception)
            stack = contextlib.AsyncExitStack()
            engines = self._given_engines
            if engines is None:
                # The worker transcribes and diarizes; the LLM stays in the API process.
                wanted = msgspec.structs.replace(
                    settings.engines, llm=msgspec.structs.replace(settings.engines.llm, enabled=False)
                )
                engines = await stack.enter_async_context(open_engines(wanted))
                self.engine_loads += 1
            services = await stack.enter_async_context(
                build_services(settings, engines, self.queue, role="worker", http_transport=self._transport)
            )
            if self._background:
                jobs, retention = settings.jobs, settings.retention
                self._tasks = [
                    asyncio.create_task(
                        self._every(jobs.sweep_interval_seconds, "sweeper", services, lambda: self._sweep(services))
                    ),
                    asyncio.create_task(
                        self._every(retention.purge_interval_seconds, "purge", services, services.retention.purge)
                    ),
                ]
            self._stack = stack
            self._services = services
            log.info("worker runtime ready (engines: %s)", engines.mode)
            return services

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
        self._services = None

    async def _every(
        self, interval: float, name: str, services: Services, step: Callable[[], Awaitable[Any]]
    ) -> None:
        """Run `step` every `interval` s in one process at a time (a Redis lock per pass).

        An outage of PostgreSQL or Redis is logged once when it starts and once when it ends.
        """
        lock = f"lexia:worker:{name}"
        outage = self._outages.setdefault(name, Outage(log, f"the {name} pass"))
        while True:
            try:
                if await services.redis.set(lock, process_name("worker"), nx=True, px=max(1, int(interval * 900))):
                    await step()
                outage.ok()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._broker_gap = True
                outage.failed(exc)
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("%s pass failed", name)
                outage.failed(exc)
            await asyncio.sleep(interval)

    async def _sweep(self, services: Services) -> None:
        """One sweep; right after Redis was unreachable or restarted, messages may have been lost with
        it (it keeps nothing on disk here), so every queued job and due delivery is enqueued again."""
        run_id = str((await services.redis.info("server")).get("run_id", ""))
        restarted = self._redis_run_id is not None and run_id != self._redis_run_id
        lost = restarted or self._broker_gap
        self._redis_run_id = run_id
        await services.sweeper.sweep(lost_messages=lost)
        self._broker_gap = False

    def begin_shutdown(self) -> None:
        """The worker is stopping: running jobs get LEXIA_SHUTDOWN_GRACE_SECONDS to finish, then are
        handed back (their lease released and their id enqueued again) for another worker."""
        self._stopping = True
        grace = self.settings.server.shutdown_grace_seconds
        for task in list(self._running):
            task.get_loop().call_soon_threadsafe(self._hand_back_later, task, grace)

    def _hand_back_later(self, task: asyncio.Task[float | None], grace: float) -> None:
        if not task.done():
            task.get_loop().call_later(grace, task.cancel)

    # -- what the actors call --------------------------------------------------------------

    async def run_job(self, kind: JobKind, job_id: str) -> float | None:
        """Run one job; a retry delay in seconds after a transient failure (or after an outage)."""
        services = await self.start()
        attempt = asyncio.ensure_future(services.runner.run(kind, job_id))
        self._running.add(attempt)
        if self._stopping:
            self._hand_back_later(attempt, self.settings.server.shutdown_grace_seconds)
        try:
            delay = await attempt
        except asyncio.CancelledError:
            if attempt.cancelled() and self._stopping:
                log.info("job %s handed back: the worker is stopping", job_id)
                return None
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._outages.setdefault("jobs", Outage(log, "running jobs")).failed(exc)
            return OUTAGE_RETRY_SECONDS
        finally:
            self._running.discard(attempt)
        self._outages.setdefault("jobs", Outage(log, "running jobs")).ok()
        return delay

    async def deliver(self, delivery_id: str) -> float | None:
        """One webhook delivery attempt if due; a retry delay when PostgreSQL or Redis is out."""
        services = await self.start()
        outage = self._outages.setdefault("deliveries", Outage(log, "webhook deliveries"))
        try:
            await services.deliverer.deliver(delivery_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage.failed(exc)
            return OUTAGE_RETRY_SECONDS
        outage.ok()
        return None


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

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Give running jobs the grace period, then hand them back."""
        self.runtime.begin_shutdown()

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


class Heartbeat(Middleware):
    """Every `interval` seconds, store the time in Redis (kept for 60 s) for /ready."""

    def __init__(self, redis_url: str, *, interval: float = 5.0) -> None:
        self._url = redis_url
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def beat_once(client: redis.Redis) -> None:
        """Write one heartbeat."""
        client.set(HEARTBEAT_KEY, repr(time.time()), ex=60)

    def _loop(self) -> None:
        client = redis.Redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
        while not self._stop.is_set():
            try:
                self.beat_once(client)
            except redis.RedisError as exc:
                log.warning("heartbeat: Redis unreachable (%s)", type(exc).__name__)
            self._stop.wait(self._interval)
        client.close()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start beating once the worker runs."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lexia-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop beating."""
        self._stop.set()
