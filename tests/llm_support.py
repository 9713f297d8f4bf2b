"""Helpers for the LLM tests: apps with a chosen engine, the OpenAI SDK over ASGI, SSE parsing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
from litestar import Litestar
from openai import AsyncOpenAI

from lexia.api.chat import llm_service
from lexia.api.deps import Services
from lexia.app import create_app
from lexia.engines.base import Engines, LLMEngine
from lexia.engines.fakes import FakeLLM
from lexia.services.chat import LLMService
from lexia.services.keys import ApiKey
from tests.conftest import make_settings

MODEL = "lexia-fake-llm"
BASE_URL = "http://lexia.test"


@dataclass
class LLMRunning:
    """An app whose lifespan runs on the test's event loop, with an in-process HTTP client.

    (Litestar's AsyncTestClient runs the app on a portal thread's loop; the OpenAI SDK and raw
    ASGI calls must share one loop with the app's Redis and database pools.)
    """

    app: Litestar
    client: httpx2.AsyncClient

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    async def make_key(
        self, scopes: str = "*", *, tenant: str = "acme", name: str = "test", **kw: Any
    ) -> tuple[ApiKey, str]:
        """Create a key (and its tenant) directly through the key service."""
        return await self.services.keys.create(
            tenant_id=tenant, name=name, scopes=scopes.split(","), create_tenant=True, **kw
        )


LLMAppFactory = Callable[..., Awaitable[LLMRunning]]


@contextlib.asynccontextmanager
async def running_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol of `app` on the current event loop."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(f"app startup failed: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def llm_apps() -> AsyncIterator[LLMAppFactory]:
    """Fixture body: start apps serving a given LLM engine (default FakeLLM) with LEXIA_* overrides.

    Test modules bind it with `llm_app = pytest.fixture(llm_apps)`.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def _start(engine: LLMEngine | None = None, **overrides: str) -> LLMRunning:
            disabled = {"llm"} if overrides.get("LEXIA_LLM_ENABLED") == "false" else set()
            llm = None if disabled else (engine if engine is not None else FakeLLM(MODEL))
            app = create_app(make_settings(**overrides), engines=Engines(llm=llm, mode="fake", disabled=disabled))
            await stack.enter_async_context(running_lifespan(app))
            client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE_URL, timeout=30)
            stack.push_async_callback(client.aclose)
            return LLMRunning(app, client)

        yield _start


def sdk(running: LLMRunning, secret: str, **kwargs: Any) -> AsyncOpenAI:
    """The official OpenAI SDK talking to the running app in-process."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=running.app), base_url=BASE_URL)
    return AsyncOpenAI(api_key=secret, base_url=f"{BASE_URL}/v1", http_client=http, max_retries=0, **kwargs)


def service(running: LLMRunning) -> LLMService:
    """The app's LLM service (to tune the keep-alive interval in a test)."""
    return llm_service(running.app)


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
