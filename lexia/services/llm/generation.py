"""One call's engine streams merged into one queue (counts, keep-alives) and its metered end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, Protocol

import anyio

from lexia.engines.base import LLMChunk

log = logging.getLogger("lexia.llm")

KEEPALIVE: Final = object()
END: Final = object()

# (stream slot, chunk | END | KEEPALIVE | the exception that ended the stream)
Item = tuple[int, object]


class Generation:
    """Pumps each engine stream in its own task so a slow client never cancels the engine.

    Counts are the latest cumulative ones each stream reported, so they include tokens the
    client has not received yet (what the engine worked on). A stream is *waiting* from its
    acceptance until its first generated token, its finish or its end; `on_wait_change` gets
    -1 each time one stops waiting (the admission counter is raised by the caller).
    """

    def __init__(self, on_wait_change: Callable[[int], None]) -> None:
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._streams: list[AsyncIterator[LLMChunk]] = []
        self._waiting: list[bool] = []
        self._prompt: list[int] = []
        self._completion: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._side: list[asyncio.Task[Any]] = []
        self._on_wait_change = on_wait_change
        self._last_data = 0.0
        self._closed = False

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every stream."""
        return sum(self._prompt)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far by every stream."""
        return sum(self._completion)

    @property
    def streams(self) -> int:
        """Number of engine streams."""
        return len(self._streams)

    def attach(self, stream: AsyncIterator[LLMChunk], accepted: LLMChunk) -> None:
        """Add an engine stream whose acceptance chunk has been read."""
        self._streams.append(stream)
        self._waiting.append(True)
        self._prompt.append(accepted.prompt_tokens)
        self._completion.append(accepted.completion_tokens)

    def start(self, keepalive: float | None) -> None:
        """Start pumping every stream (and a keep-alive ticker when `keepalive` is set)."""
        loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        for slot, stream in enumerate(self._streams):
            self._tasks.append(asyncio.create_task(self._pump(slot, stream), name=f"llm-pump-{slot}"))
        if keepalive is not None:
            self._tasks.append(asyncio.create_task(self._tick(keepalive), name="llm-keepalive"))

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run side work (e.g. a rate-limit charge) now; `aclose` waits for it."""
        self._side.append(asyncio.create_task(work))

    def mark_sent(self) -> None:
        """Data went out: restart the keep-alive clock."""
        self._last_data = asyncio.get_running_loop().time()

    async def next_items(self) -> list[Item]:
        """Wait for at least one item; return it with everything else already queued."""
        items = [await self._queue.get()]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def _stop_waiting(self, slot: int) -> None:
        if self._waiting[slot]:
            self._waiting[slot] = False
            self._on_wait_change(-1)

    async def _pump(self, slot: int, stream: AsyncIterator[LLMChunk]) -> None:
        try:
            async for chunk in stream:
                self._prompt[slot] = chunk.prompt_tokens
                self._completion[slot] = chunk.completion_tokens
                if chunk.completion_tokens or chunk.finish_reason is not None:
                    self._stop_waiting(slot)
                self._queue.put_nowait((slot, chunk))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed: hand it to the consumer
            self._queue.put_nowait((slot, exc))
        else:
            self._queue.put_nowait((slot, END))
        finally:
            self._stop_waiting(slot)

    async def _tick(self, every: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - self._last_data
            if idle >= every:
                self._queue.put_nowait((-1, KEEPALIVE))
                self._last_data = loop.time()
                idle = 0.0
            await asyncio.sleep(every - idle)

    async def aclose(self) -> None:
        """Cancel the pumps (aborting unfinished engine requests) and close every stream."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for outcome in await asyncio.gather(*self._side, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("LLM side work failed", exc_info=outcome)
        for slot, stream in enumerate(self._streams):
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            self._stop_waiting(slot)


class Meter(Protocol):
    """Where token counts go: usage ledger, rate limiter, metrics (implemented by the API)."""

    def progress(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Counts so far (called as tokens stream, cheap)."""
        ...

    async def admitted(self, prompt_tokens: int) -> None:
        """The engine accepted the request: charge the prompt."""
        ...

    async def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The request ended (completed, failed or aborted): charge the output."""
        ...


class Finisher:
    """Closes a generation and charges its output exactly once, even on a client disconnect."""

    def __init__(self, generation: Generation, meter: Meter) -> None:
        self._generation = generation
        self._meter = meter
        self._done = False

    async def __call__(self) -> None:
        """Abort what is unfinished, then report the final counts (shielded from cancellation)."""
        if self._done:
            return
        self._done = True
        generation = self._generation
        with anyio.CancelScope(shield=True):
            await generation.aclose()
            self._meter.progress(generation.prompt_tokens, generation.completion_tokens)
            await self._meter.finished(generation.prompt_tokens, generation.completion_tokens)


class Frames:
    """An SSE byte stream whose aclose() always ends the generation, started or not."""

    def __init__(self, frames: AsyncIterator[bytes], finisher: Finisher) -> None:
        self._frames = frames
        self._finisher = finisher

    def __aiter__(self) -> Frames:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._frames)

    async def aclose(self) -> None:
        """Stop the frames and end the generation."""
        aclose = getattr(self._frames, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._finisher()
