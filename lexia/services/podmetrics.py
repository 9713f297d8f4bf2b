"""Pod-wide metrics in Redis: job durations and webhook attempts, from every process, scraped by the API.

Jobs finish in the worker processes (and sync jobs in the API's), webhook attempts in the
workers; none of those but the API serves /metrics, and there may be several of each. So the
process where something finishes adds it to Redis hashes, and the API's /metrics handler reads
the totals back into `lexia.metrics.PodCollector`:

- `lexia:metrics:job_duration:<kind>`: one field per bucket bound of `JOB_BUCKETS` (counts of
  observations falling in that bucket, not cumulative), `count` and `sum` (seconds);
- `lexia:metrics:webhook_attempts`: `success` and `failure`.

A record is one pipelined MULTI/EXEC round trip (HINCRBY / HINCRBYFLOAT), so a scrape never sees
half of one. Recording is best effort: a Redis error never fails the job or the delivery, and it
is logged once per outage, not per event. Keys and labels hold kinds and outcomes only.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from lexia.metrics import JOB_BUCKETS, HistogramTotals, PodCollector, PodTotals, le_label
from lexia.services.jobs.kinds import KINDS

log = logging.getLogger("lexia.metrics")

PREFIX = "lexia:metrics"
OUTCOMES = ("success", "failure")
# A record or a read waits at most this long for Redis (the job or scrape goes on without it).
TIMEOUT = 2.0
_FIELDS = tuple(le_label(b) for b in JOB_BUCKETS)


def job_seconds(row: Any) -> float | None:
    """Seconds from a finished job's `started_at` to its `finished_at`; None if it never started."""
    started: datetime | None = getattr(row, "started_at", None)
    finished: datetime | None = getattr(row, "finished_at", None)
    if started is None or finished is None:
        return None
    return max(0.0, (finished - started).total_seconds())


class PodMetrics:
    """Records job durations and webhook attempts in Redis and reads the pod's totals back."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = PREFIX, timeout: float = TIMEOUT) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._failing: set[str] = set()  # "record" / "read" while Redis refuses them (logged once)

    def job_key(self, kind: str) -> str:
        """The Redis hash of one kind's job-duration histogram."""
        return f"{self._prefix}:job_duration:{kind}"

    @property
    def webhook_key(self) -> str:
        """The Redis hash of webhook attempts per outcome."""
        return f"{self._prefix}:webhook_attempts"

    # -- recording ---------------------------------------------------------------------------

    async def job_finished(self, kind: str, seconds: float) -> None:
        """Observe one job of `kind` that reached a terminal state after `seconds` of running."""
        if kind not in KINDS or seconds < 0:
            return
        key = self.job_key(kind)
        index = bisect.bisect_left(JOB_BUCKETS, seconds)  # the first bound >= seconds (`le` semantics)

        def commands(pipe: Any) -> None:
            if index < len(_FIELDS):  # above the last bound: in `count` (+Inf) only
                pipe.hincrby(key, _FIELDS[index], 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", seconds)

        await self._write(commands)

    async def record_job(self, row: Any) -> None:
        """Observe a job row just moved to a terminal state (skipped if it never started running)."""
        seconds = job_seconds(row)
        if seconds is not None:
            await self.job_finished(str(row.kind), seconds)

    async def webhook_attempt(self, *, success: bool) -> None:
        """Count one finished webhook delivery attempt."""
        outcome = "success" if success else "failure"
        await self._write(lambda pipe: pipe.hincrby(self.webhook_key, outcome, 1))

    async def _write(self, commands: Callable[[Any], object]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                commands(pipe)
                await asyncio.wait_for(pipe.execute(), self._timeout)
        except Exception as exc:  # never fail a job or a delivery over a metric
            self._down("record", exc)
        else:
            self._up("record")

    # -- reading -----------------------------------------------------------------------------

    async def load(self) -> PodTotals:
        """The pod's totals, in one pipelined round trip (raises on a Redis error)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind in KINDS:
                pipe.hgetall(self.job_key(kind))
            pipe.hgetall(self.webhook_key)
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        durations = {kind: self._histogram(reply) for kind, reply in zip(KINDS, replies[: len(KINDS)], strict=True)}
        attempts = {o: int(replies[-1].get(o.encode(), 0)) for o in OUTCOMES}
        return PodTotals(durations, attempts)

    async def refresh(self, collector: PodCollector) -> bool:
        """Load the totals into `collector`; on a Redis error keep its last snapshot (never raises)."""
        try:
            totals = await asyncio.wait_for(self.load(), self._timeout)
        except Exception as exc:
            self._down("read", exc)
            return False
        self._up("read")
        collector.update(totals)
        return True

    def _histogram(self, fields: dict[bytes, bytes]) -> HistogramTotals:
        return HistogramTotals(
            buckets=tuple(int(fields.get(f.encode(), 0)) for f in _FIELDS),
            count=int(fields.get(b"count", 0)),
            sum=float(fields.get(b"sum", 0.0)),
        )

    # -- logging an outage once --------------------------------------------------------------

    def _down(self, what: str, exc: Exception) -> None:
        if what not in self._failing:
            self._failing.add(what)
            log.warning(
                "pod metrics: %s failed (%s); further failures are not logged until Redis answers again",
                what, type(exc).__name__,
            )

    def _up(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.info("pod metrics: %s works again", what)
