"""Dramatiq actors (thin: they take ids and call the runtime); importing this module sets up the broker.

This is the one module with import-time effects: run with ``dramatiq lexia.worker.actors``
(``make worker``), it reads the settings, makes the Redis broker with its middleware (AsyncIO: one
event loop per process; Heartbeat for /ready; RuntimeMiddleware: the WorkerRuntime opened once
per process at boot) and declares the actors on it.

One actor per job kind (`transcription.run`, `diarization.run`, from lexia.services.jobs.kinds)
runs one job attempt (a finished, cancelled or elsewhere-running job is skipped); a transient
engine failure becomes a Dramatiq retry after the delay the job service chose. `webhook.deliver`
makes one delivery attempt; the next one is scheduled by the delivery service itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.middleware import AsyncIO

from lexia.logs import configure_logging, redact_handlers
from lexia.queue import DramatiqQueue, make_broker
from lexia.services.jobs.kinds import KINDS, JobKind
from lexia.services.webhooks.events import DELIVER
from lexia.settings import environment_with_dotenv, load_settings, warn_unknown_variables
from lexia.worker.runtime import Heartbeat, RuntimeMiddleware, WorkerRuntime

# Dramatiq's own retries only cover errors outside the job services (a database outage at claim
# time); job attempts are counted on the job row.
ACTOR_RETRIES = 20
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 300_000
JOB_PRIORITY = 10
DELIVERY_PRIORITY = 0
DELIVERY_TIME_LIMIT_MS = 120_000


def _job_actor(rt: WorkerRuntime, kind: JobKind) -> Callable[[str], Awaitable[None]]:
    async def run(job_id: str) -> None:
        delay = await rt.run_job(kind, job_id)
        if delay is not None:
            raise dramatiq.Retry(f"{kind.name} {job_id} failed transiently", delay=int(delay * 1000))

    run.__name__ = kind.actor.replace(".", "_")
    return run


def declare_actors(on: dramatiq.Broker, rt: WorkerRuntime) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the actors on a broker (the Redis one here, a StubBroker in tests)."""
    options: dict[str, Any] = {
        "max_retries": ACTOR_RETRIES, "min_backoff": MIN_BACKOFF_MS, "max_backoff": MAX_BACKOFF_MS
    }
    time_limit = int((rt.settings.jobs.timeout_seconds + 120) * 1000)
    made: dict[str, dramatiq.Actor[Any, Any]] = {}
    for kind in KINDS.values():
        declare = dramatiq.actor(
            actor_name=kind.actor, queue_name=kind.queue, priority=JOB_PRIORITY, broker=on, time_limit=time_limit,
            **options,
        )
        made[kind.actor] = declare(_job_actor(rt, kind))

    async def deliver_webhook(delivery_id: str) -> None:
        delay = await rt.deliver(delivery_id)
        if delay is not None:
            raise dramatiq.Retry(f"delivery {delivery_id}: database or Redis unavailable", delay=int(delay * 1000))

    declare = dramatiq.actor(
        actor_name=DELIVER.actor, queue_name=DELIVER.queue, priority=DELIVERY_PRIORITY, broker=on,
        time_limit=DELIVERY_TIME_LIMIT_MS, **options,
    )
    made[DELIVER.actor] = declare(deliver_webhook)
    return made


_environ = environment_with_dotenv()
settings = load_settings(_environ)
configure_logging(settings.server.log_level)
warn_unknown_variables(_environ)
# Tracebacks printed by Dramatiq's own handlers withhold database messages too, and retries after
# an outage (logged once by the runtime) are not announced one message at a time.
for _name in ("", "dramatiq"):
    redact_handlers(logging.getLogger(_name))
logging.getLogger("dramatiq.middleware.retries.Retries").setLevel(logging.WARNING)
broker = make_broker(settings.data.redis_url.reveal())
broker.add_middleware(AsyncIO())
broker.add_middleware(Heartbeat(settings.data.redis_url.reveal()))
worker_runtime = WorkerRuntime(settings, queue=DramatiqQueue(broker))
broker.add_middleware(RuntimeMiddleware(worker_runtime))
dramatiq.set_broker(broker)
actors = declare_actors(broker, worker_runtime)

__all__ = ["actors", "broker", "declare_actors"]
