"""Typed query and header parameters shared by several routes (documented in /openapi.json)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from lexia.services.access.idempotency import HEADER

Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size, 1..100 (§1.5)")]
After = Annotated[str | None, Parameter(description="List items older than this id (§1.5)")]
IdempotencyKey = Annotated[
    str | None, Parameter(header=HEADER, required=False, description="§1.7: 1..255 printable ASCII characters")
]
