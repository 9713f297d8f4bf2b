"""The app served by a real uvicorn server in the test's event loop (STT tests).

Litestar's AsyncTestClient runs the app in a portal thread and blocks the test loop per request,
so requests cannot overlap and background jobs run in another loop. The STT tests need
concurrent requests (concurrency slots, sync jobs outliving a request, cancellation), streamed
uploads and client disconnects, so they talk to a real server over 127.0.0.1 instead; the same
app also serves the OpenAI SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from openai import AsyncOpenAI

from lexia.api.deps import Services
from lexia.services.keys import ApiKey
from tests.stt.media import files_under


@dataclass
class Live:
    """A served app, an HTTP client for it and its storage directory."""

    app: Litestar
    base_url: str
    client: httpx.AsyncClient
    storage: Path

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    async def make_key(
        self, scopes: str = "*", *, tenant: str = "acme", name: str = "test", **kw: Any
    ) -> tuple[ApiKey, str]:
        return await self.services.keys.create(
            tenant_id=tenant, name=name, scopes=scopes.split(","), create_tenant=True, **kw
        )

    def sdk(self, secret: str) -> AsyncOpenAI:
        """The official OpenAI SDK pointed at this server."""
        return AsyncOpenAI(api_key=secret, base_url=f"{self.base_url}/v1", max_retries=0, timeout=60)

    def leftovers(self) -> list[Path]:
        """Files in the storage directory (none may be left by a finished request)."""
        return files_under(self.storage)


LiveFactory = Callable[..., Awaitable[Live]]
