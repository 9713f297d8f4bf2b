"""Dramatiq broker factory (Redis) and the worker heartbeat, shared by the API and the worker."""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

log = logging.getLogger("lexia.worker")


def make_broker(redis_url: str, *, namespace: str = "lexia") -> RedisBroker:
    """A Redis broker; jobs carry ids only, so messages stay small."""
    return RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]

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
