"""Readiness (API.md §2) and the gauges refreshed before /metrics renders.

`/ready` checks the database, Redis, a worker heartbeat younger than 30 s and every enabled
engine, each bounded in time. The worker beats HEARTBEAT_KEY (lexia.worker); any process
that serves /ready reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lexia.db import Database, DatabaseError, ping
from lexia.db import is_outage as db_outage
from lexia.engines.base import Engines
from lexia.errors import EngineUnavailable, LexiaError, ServiceUnavailable
from lexia.metrics import Metrics
from lexia.services.jobs.store import JobStore
from lexia.services.podmetrics import PodMetrics

HEARTBEAT_KEY = "lexia:worker:heartbeat"
HEARTBEAT_MAX_AGE = 30.0
CHECK_TIMEOUT = 2.0
ENGINE_KINDS = ("llm", "stt", "diarization")


async def _guard(check: Callable[[], Awaitable[str]]) -> str:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except (TimeoutError, RedisError, OSError, *DatabaseError, EngineUnavailable, ValueError):
        return "fail"


class Health:
    """Readiness checks of one process."""

    def __init__(self, db: Database, redis: aioredis.Redis, engines: Engines, metrics: Metrics) -> None:
        self._db = db
        self._redis = redis
        self._engines = engines
        self._metrics = metrics

    async def _database(self) -> str:
        await ping(self._db)
        return "ok"

    async def _redis_ping(self) -> str:
        await self._redis.ping()
        return "ok"

    async def _worker(self) -> str:
        beat = await self._redis.get(HEARTBEAT_KEY)
        return "ok" if beat is not None and time.time() - float(beat) <= HEARTBEAT_MAX_AGE else "fail"

    async def _engine(self, engine: Any) -> str:
        await engine.check()
        return "ok"

    async def checks(self) -> tuple[dict[str, str], LexiaError | None]:
        """Each check `ok`, `fail` or `disabled`, and the error to answer when something fails."""
        database, redis_state = await asyncio.gather(_guard(self._database), _guard(self._redis_ping))
        worker = await _guard(self._worker) if redis_state == "ok" else "fail"
        checks = {"database": database, "redis": redis_state, "worker": worker}
        engines = self._engines
        for name, engine in zip(ENGINE_KINDS, (engines.llm, engines.stt, engines.diarizer), strict=True):
            if name in engines.disabled or engine is None:
                checks[name] = "disabled"
            else:
                checks[name] = await _guard(functools.partial(self._engine, engine))
            self._metrics.engine_up.labels(name).set(1 if checks[name] == "ok" else 0)
        failing = [name for name, state in checks.items() if state == "fail"]
        if not failing:
            return checks, None
        message = f"Not ready: {', '.join(failing)} failing"
        if all(name in ENGINE_KINDS for name in failing):
            return checks, EngineUnavailable(message)
        return checks, ServiceUnavailable(message)


def is_outage(exc: BaseException) -> bool:
    """A lost or refused PostgreSQL or Redis connection (answered 503, not 500)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) or db_outage(exc)


async def refresh_gauges(jobs: JobStore, pod: PodMetrics, metrics: Metrics) -> None:
    """lexia_jobs{kind,status} from the database and the pod-wide totals from Redis (each bounded
    in time; on failure the last values stay)."""

    async def job_gauges() -> None:
        with contextlib.suppress(*DatabaseError, OSError, TimeoutError):
            counts = await asyncio.wait_for(jobs.active_counts(), CHECK_TIMEOUT)
            for (kind, status), count in counts.items():
                metrics.jobs.labels(kind, status).set(count)

    await asyncio.gather(job_gauges(), pod.refresh(metrics.pod))
