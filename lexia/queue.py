"""Dramatiq broker factory (Redis), shared by the API (to enqueue) and the worker."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker


def make_broker(redis_url: str, *, namespace: str = "lexia") -> RedisBroker:
    """A Redis broker; jobs carry ids only, so messages stay small."""
    return RedisBroker(url=redis_url, namespace=namespace)
