"""Server-sent events: a streaming response that always closes its iterator, disconnects included."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import anyio
from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Scope, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClosableFrames(Protocol):
    """An async iterator of SSE bytes with aclose() (an async generator, or the chat service's Frames)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def aclose(self) -> Awaitable[None]: ...


class _ClosingStreamingResponse(ASGIStreamingResponse):
    """Litestar cancels a stream on disconnect without closing its iterator; this closes it."""

    __slots__ = ("frames", "on_close")

    def __init__(self, *, frames: ClosableFrames, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(iterator=frames, **kwargs)
        self.frames = frames
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.frames.aclose()
            self.on_close()


class EventStream(Stream):
    """`text/event-stream` with no-cache headers; `on_close` runs once the stream has ended."""

    def __init__(self, frames: ClosableFrames, *, on_close: Callable[[], None]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=dict(SSE_HEADERS))
        self._frames = frames
        self._on_close = on_close

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        background: Any = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: Any = None,
        status_code: int | None = None,
        type_encoders: Any = None,
    ) -> ASGIResponse:
        """Build the ASGI response (mirrors Stream.to_asgi_response with the closing class)."""
        merged = {**headers, **self.headers} if headers is not None else self.headers
        all_cookies = self.cookies if cookies is None else itertools.chain(self.cookies, cookies)
        return _ClosingStreamingResponse(
            frames=self._frames,
            on_close=self._on_close,
            background=self.background or background,
            content_length=0,
            cookies=all_cookies,
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged,
            is_head_response=is_head_response,
            media_type="text/event-stream",
            status_code=self.status_code or status_code,
        )
