"""The one app harness: an app in-process (lifespan and requests on the test's event loop) or
served by uvicorn on 127.0.0.1 where a real socket is needed (disconnects, streamed uploads,
a worker process, webhooks); one key factory; a clock tests can move; waits on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
from litestar import Litestar
from openai import AsyncOpenAI

from lexia.app import create_app
from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.engines.base import Engines
from lexia.serve import EnvelopeProtocol
from lexia.services.access.keys import ApiKey
from lexia.services.jobs.kinds import JobQueue
from lexia.services.wiring import Services, build_services
from lexia.settings import Settings

IN_PROCESS_URL = "http://lexia.test"


async def make_key(
    services: Services, scopes: str = "*", *, tenant: str = "acme", name: str = "test", **kw: Any
) -> tuple[ApiKey, str]:
    """Create a key (and its tenant) directly through the key service: (key, plaintext)."""
    return await services.keys.create(tenant_id=tenant, name=name, scopes=scopes.split(","), create_tenant=True, **kw)


@dataclass
class TestApp:
    """A started app, an HTTP client for it, and its storage directory."""

    __test__ = False  # not a test class

    app: Litestar
    client: Any  # httpx2.AsyncClient in-process, httpx.AsyncClient when served
    base_url: str
    storage: Path

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    @property
    def base(self) -> str:
        return self.base_url

    async def make_key(self, scopes: str = "*", **kw: Any) -> tuple[ApiKey, str]:
        return await make_key(self.services, scopes, **kw)

    def sdk(self, secret: str, **kwargs: Any) -> AsyncOpenAI:
        """The official OpenAI SDK talking to this app."""
        if self.base_url == IN_PROCESS_URL:
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app), base_url=IN_PROCESS_URL)
            return AsyncOpenAI(api_key=secret, base_url=f"{IN_PROCESS_URL}/v1", http_client=http, max_retries=0, **kwargs)
        return AsyncOpenAI(api_key=secret, base_url=f"{self.base_url}/v1", max_retries=0, timeout=60, **kwargs)

    def leftovers(self) -> list[Path]:
        """Files in the storage directory (none may be left by a finished request)."""
        root = self.storage
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


AppFactory = Callable[..., Awaitable[TestApp]]


@contextlib.asynccontextmanager
async def lifespan_of(app: Litestar) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol of `app` on the current event loop."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
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


@contextlib.asynccontextmanager
async def uvicorn_server(app: Litestar) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in the test's loop; its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False, http=EnvelopeProtocol
    )
    async with serving(uvicorn.Server(config)) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serving(server: uvicorn.Server) -> AsyncIterator[int]:
    """Run a uvicorn server in the test's loop until the block ends; the port it listens on."""
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # pytest owns signals
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def app_factory(
    settings_for: Callable[..., Settings], storage_root: Path, *, served: bool
) -> AsyncIterator[AppFactory]:
    """Start apps (stopped in reverse order on exit) from LEXIA_* overrides or whole settings."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(
            settings: Settings | None = None,
            *,
            engines: Engines | None = None,
            queue: JobQueue | None = None,
            clock: Clock = SYSTEM_CLOCK,
            **overrides: str,
        ) -> TestApp:
            nonlocal count
            count += 1
            if settings is None:
                overrides.setdefault("LEXIA_STORAGE_DIR", str(storage_root / f"storage{count}"))
                settings = settings_for(**overrides)
            app = create_app(settings, engines=engines, queue=queue, clock=clock)
            storage = Path(settings.audio.storage_dir)
            if served:
                base = await stack.enter_async_context(uvicorn_server(app))
                client: Any = httpx.AsyncClient(base_url=base, timeout=60)
            else:
                await stack.enter_async_context(lifespan_of(app))
                base = IN_PROCESS_URL
                client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base, timeout=60)
            stack.push_async_callback(client.aclose)
            return TestApp(app, client, base, storage)

        yield start


@contextlib.asynccontextmanager
async def services_for(
    settings: Settings, queue: JobQueue | None = None, *, engines: Engines | None = None, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Services]:
    """A worker process's services (build_services, fake engines unless given), e.g. a second worker."""
    from lexia.engines.registry import fake_engines
    from lexia.queue import ListQueue

    chosen = engines if engines is not None else fake_engines(settings.engines)
    async with build_services(settings, chosen, queue if queue is not None else ListQueue(), role="worker",
                              clock=clock) as services:
        yield services


# -- time and waiting -----------------------------------------------------------------------------


@dataclass
class FakeClock:
    """A Clock that moves only when told to (key expiry, leases, cache ages without sleeping)."""

    wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    mono: float = 1_000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


async def wait_for(check: Callable[[], Awaitable[Any]], *, timeout: float = 20, every: float = 0.05) -> Any:
    """Poll until `check` returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(every)


async def wait_ready(base: str, *, timeout: float = 60) -> None:
    """Wait until a server started in another process answers GET /ready with 200."""

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"{base}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, every=0.2)
