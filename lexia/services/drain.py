"""Draining: when the process is asked to stop, work done inside requests gets a deadline.

The server (lexia.serve) starts the drain on its first stop signal. Until the deadline, in-flight
requests carry on (a sync transcription that finishes answers 200); at the deadline, sync jobs are
stopped (recorded as failed) and what waits on them answers 503 in the error envelope, before the
server's own graceful timeout would cut the connections with a bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lexia.errors import ServiceUnavailable

T = TypeVar("T")


def stopping(what: str) -> ServiceUnavailable:
    """503 for work stopped because the server is shutting down."""
    return ServiceUnavailable(f"The server is shutting down; the {what} was stopped before it finished")


class Drain:
    """The deadline of in-flight work once the process is stopping."""

    def __init__(self) -> None:
        self.started = False
        self.expired = asyncio.Event()
        self._on_expiry: list[Callable[[], None]] = []

    def on_expiry(self, callback: Callable[[], None]) -> None:
        """Run `callback` (on the event loop) when the deadline passes."""
        self._on_expiry.append(callback)

    def begin(self, seconds: float) -> None:
        """Start draining (idempotent): the deadline is `seconds` from now. Call on the event loop."""
        if self.started:
            return
        self.started = True
        asyncio.get_running_loop().call_later(max(0.0, seconds), self._expire)

    def _expire(self) -> None:
        self.expired.set()
        for callback in self._on_expiry:
            callback()

    async def run(self, work: Awaitable[T], what: str) -> T:
        """Await `work`; if the drain deadline passes first, cancel it and answer 503."""
        task = asyncio.ensure_future(work)
        if self.expired.is_set():
            task.cancel()
        waiter = asyncio.ensure_future(self.expired.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled() and self.expired.is_set():
            raise stopping(what)
        return task.result()
