"""Helpers for the LLM tests: apps with a chosen engine, the OpenAI SDK over ASGI, SSE parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar
from openai import AsyncOpenAI

from lexia.engines.base import Engines, LLMEngine
from lexia.engines.fakes import FakeLLM
from lexia.services.llm.chat import LLMService
from tests.conftest import make_settings
from tests.harness import TestApp, app_factory

MODEL = "lexia-fake-llm"


LLMAppFactory = Callable[..., Awaitable[TestApp]]


async def llm_apps(tmp_path: Path) -> AsyncIterator[LLMAppFactory]:
    """Fixture body: start in-process apps serving a given LLM engine (default FakeLLM) with LEXIA_* overrides.

    Test modules bind it with `llm_app = pytest.fixture(llm_apps)`.
    """
    async with app_factory(make_settings, tmp_path, served=False) as start:

        async def _start(engine: LLMEngine | None = None, **overrides: str) -> TestApp:
            disabled = {"llm"} if overrides.get("LEXIA_LLM_ENABLED") == "false" else set()
            llm = None if disabled else (engine if engine is not None else FakeLLM(MODEL))
            return await start(engines=Engines(llm=llm, mode="fake", disabled=disabled), **overrides)

        yield _start


def sdk(running: TestApp, secret: str, **kwargs: Any) -> AsyncOpenAI:
    """The official OpenAI SDK talking to the running app in-process."""
    return running.sdk(secret, **kwargs)


def service(running: TestApp) -> LLMService:
    """The app's LLM service (to tune the keep-alive interval in a test)."""
    return running.services.llm


@dataclass
class SSE:
    """A parsed event stream: data payloads in order, comment lines, and the raw text."""

    raw: str
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """Every JSON data payload (not [DONE])."""
        return [json.loads(d) for d in self.data if d != "[DONE]"]


def parse_sse(raw: str) -> SSE:
    """Split on "\\n" only: model text may hold U+2028 and friends that other splitters break on."""
    events = SSE(raw)
    for line in raw.split("\n"):
        if line.startswith("data: "):
            events.data.append(line[len("data: "):])
        elif line.startswith(":"):
            events.comments.append(line)
    return events


@dataclass
class RawExchange:
    """What a raw ASGI client saw."""

    status: int
    headers: dict[str, str]
    body: bytes


async def asgi_post(
    app: Litestar,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    disconnect_when: Callable[[bytes], bool] | None = None,
) -> RawExchange:
    """POST straight through ASGI; when `disconnect_when(body so far)` is true, the client leaves."""
    payload = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("lexia.test", 80),
    }
    sent_body = False
    gone = asyncio.Event()
    status = 0
    response_headers: dict[str, str] = {}
    received = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update({k.decode(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            received.extend(message.get("body", b""))
            if disconnect_when is not None and disconnect_when(bytes(received)):
                gone.set()
            if not message.get("more_body", False):
                gone.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=30)  # type: ignore[arg-type]
    return RawExchange(status, response_headers, bytes(received))
