"""The baseline of benchmarks/gateway.py: a bare Litestar app returning Lexia's /v1/models JSON."""

from __future__ import annotations

import json
import os
from typing import Any

from litestar import Litestar, get

BODY: dict[str, Any] = json.loads(os.environ.get("BARE_BODY", '{"object": "list", "data": []}'))


@get("/v1/models")
async def models() -> dict[str, Any]:
    """The same JSON Lexia returns, with no auth, limits, metrics or usage."""
    return BODY


app = Litestar([models])
