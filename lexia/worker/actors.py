"""Dramatiq actors (thin: they take ids and call the runtime); importing this module boots the broker.

`transcription.run` and `diarization.run` run one job attempt (a finished, cancelled or
elsewhere-running job is skipped); a transient engine failure becomes a Dramatiq retry after
the delay the job service chose. `webhook.deliver` makes one delivery attempt; the next one is
scheduled by the delivery service itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq

from lexia.queue import ACTOR_QUEUES
from lexia.worker import broker, worker_runtime
from lexia.worker.runtime import WorkerRuntime

# Dramatiq's own retries only cover errors outside the job services (a database outage at claim
# time); job attempts are counted on the job row.
ACTOR_RETRIES = 20
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 300_000


def declare_actors(on: dramatiq.Broker, rt: WorkerRuntime) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the three actors on a broker (the Redis one here, a StubBroker in tests)."""
    time_limit = int((rt.settings.jobs.timeout_seconds + 120) * 1000)

    async def run_transcription(job_id: str) -> None:
        delay = await rt.run_job("transcription", job_id)
        if delay is not None:
            raise dramatiq.Retry(f"transcription {job_id} failed transiently", delay=int(delay * 1000))

    async def run_diarization(job_id: str) -> None:
        delay = await rt.run_job("diarization", job_id)
        if delay is not None:
            raise dramatiq.Retry(f"diarization {job_id} failed transiently", delay=int(delay * 1000))

    async def deliver_webhook(delivery_id: str) -> None:
        await rt.deliver(delivery_id)

    options: dict[str, Any] = {
        "max_retries": ACTOR_RETRIES, "min_backoff": MIN_BACKOFF_MS, "max_backoff": MAX_BACKOFF_MS,
    }
    made: dict[str, dramatiq.Actor[Any, Any]] = {}
    work: tuple[tuple[str, Callable[[str], Awaitable[None]], int, int], ...] = (
        ("transcription.run", run_transcription, 10, time_limit),
        ("diarization.run", run_diarization, 10, time_limit),
        ("webhook.deliver", deliver_webhook, 0, 120_000),
    )
    for name, fn, priority, limit in work:
        declare = dramatiq.actor(
            actor_name=name, queue_name=ACTOR_QUEUES[name], priority=priority, broker=on, time_limit=limit, **options
        )
        made[name] = declare(fn)
    return made


actors = declare_actors(broker, worker_runtime)

__all__ = ["actors", "broker", "declare_actors"]
