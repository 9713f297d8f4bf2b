"""Running blocking engine work in a worker thread that can be stopped when its caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class Stopped(Exception):
    """Raised by blocking work that saw its stop event set (its caller was cancelled)."""


async def run_stoppable(limiter: anyio.CapacityLimiter, work: Callable[..., T], *args: Any) -> T:
    """`work(*args, stop)` in a thread under `limiter`. Cancelling the caller sets `stop` (the work
    ends at its next check, raising Stopped) and gives up a wait for the limiter; the cancellation
    is re-raised once the thread has let go, so the engine is free again when this returns."""
    stop = threading.Event()
    running = asyncio.ensure_future(anyio.to_thread.run_sync(functools.partial(work, *args, stop), limiter=limiter))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        running.cancel()
        with contextlib.suppress(BaseException):
            await running
        raise
