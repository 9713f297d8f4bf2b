"""Dramatiq broker factory (Redis) and the job queues: Dramatiq's and an in-memory twin.

The API and the worker enqueue by actor name and queue with the job or delivery id as the only
argument; `DramatiqQueue` and `ListQueue` both satisfy `lexia.services.jobs.kinds.JobQueue`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import anyio
import dramatiq
from dramatiq.brokers.redis import RedisBroker


def make_broker(redis_url: str, *, namespace: str = "lexia") -> RedisBroker:
    """A Redis broker; jobs carry ids only, so messages stay small."""
    return RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]


class DramatiqQueue:
    """Enqueues `actor(id)` messages on a Dramatiq broker, off the event loop."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    @staticmethod
    def message(actor: str, item_id: str, queue: str) -> dramatiq.Message[object]:
        """The message `actor(item_id)` on `queue`."""
        return dramatiq.Message(queue_name=queue, actor_name=actor, args=(item_id,), kwargs={}, options={})

    async def enqueue(self, actor: str, item_id: str, *, queue: str, delay: float | None = None) -> None:
        """Send one message; `delay` in seconds. The broker client is blocking: run it in a thread."""
        millis = None if delay is None else max(0, int(delay * 1000))
        send = partial(self.broker.enqueue, self.message(actor, item_id, queue), delay=millis)
        await anyio.to_thread.run_sync(send)


@dataclass
class ListQueue:
    """In-memory twin of DramatiqQueue: records what was enqueued (tests, benchmarks, tools)."""

    sent: list[tuple[str, str, float | None]] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)  # actor -> the queue it was sent on
    fail: bool = False

    async def enqueue(self, actor: str, item_id: str, *, queue: str, delay: float | None = None) -> None:
        """Record the message, or raise ConnectionError when `fail` is set (a broker outage)."""
        if self.fail:
            raise ConnectionError("queue unavailable")
        self.queues[actor] = queue
        self.sent.append((actor, item_id, delay))

    def ids(self, actor: str) -> list[str]:
        """Ids enqueued for one actor, in order."""
        return [item for name, item, _ in self.sent if name == actor]
