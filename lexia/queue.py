"""Dramatiq broker factory (Redis), job queues (Dramatiq and an in-memory twin), the worker heartbeat.

The API and the worker enqueue by actor name with the job or delivery id as the only argument;
`DramatiqQueue` and `ListQueue` both satisfy `lexia.services.jobs.JobQueue`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import anyio
import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

log = logging.getLogger("lexia.worker")

# Actor name -> queue. Webhooks get their own queue so deliveries never wait behind long jobs
# when a worker is started with `--queues webhooks`.
ACTOR_QUEUES: dict[str, str] = {
    "transcription.run": "jobs",
    "diarization.run": "jobs",
    "webhook.deliver": "webhooks",
}


def make_broker(redis_url: str, *, namespace: str = "lexia") -> RedisBroker:
    """A Redis broker; jobs carry ids only, so messages stay small."""
    return RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]


class DramatiqQueue:
    """Enqueues `actor(id)` messages on a Dramatiq broker, off the event loop."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def message(self, actor: str, item_id: str) -> dramatiq.Message[object]:
        """The message `actor(item_id)` on the actor's queue."""
        return dramatiq.Message(
            queue_name=ACTOR_QUEUES[actor], actor_name=actor, args=(item_id,), kwargs={}, options={}
        )

    async def enqueue(self, actor: str, item_id: str, *, delay: float | None = None) -> None:
        """Send one message; `delay` in seconds. The broker client is blocking: run it in a thread."""
        millis = None if delay is None else max(0, int(delay * 1000))
        send = partial(self.broker.enqueue, self.message(actor, item_id), delay=millis)
        await anyio.to_thread.run_sync(send)


@dataclass
class ListQueue:
    """In-memory twin of DramatiqQueue: records what was enqueued (tests, benchmarks, tools)."""

    sent: list[tuple[str, str, float | None]] = field(default_factory=list)
    fail: bool = False

    async def enqueue(self, actor: str, item_id: str, *, delay: float | None = None) -> None:
        """Record the message, or raise ConnectionError when `fail` is set (a broker outage)."""
        if actor not in ACTOR_QUEUES:
            raise ValueError(f"unknown actor {actor!r}")
        if self.fail:
            raise ConnectionError("queue unavailable")
        self.sent.append((actor, item_id, delay))

    def ids(self, actor: str) -> list[str]:
        """Ids enqueued for one actor, in order."""
        return [item for name, item, _ in self.sent if name == actor]


HEARTBEAT_KEY = "lexia:worker:heartbeat"
INTERVAL = 5.0


class Heartbeat(Middleware):
    """Every INTERVAL seconds, store the time in Redis (kept for 60 s)."""

    def __init__(self, redis_url: str, *, interval: float = INTERVAL) -> None:
        self._url = redis_url
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self, client: redis.Redis) -> None:
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
