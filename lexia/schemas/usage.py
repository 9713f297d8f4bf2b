"""GET /v1/usage (API.md §8.5)."""

from __future__ import annotations

from typing import Literal

import msgspec


class UsageAmounts(msgspec.Struct, kw_only=True):
    """What was consumed."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0


class UsageRow(msgspec.Struct, kw_only=True):
    """Usage of one key and kind on one UTC day."""

    date: str
    key_id: str
    kind: str
    requests: int
    input_tokens: int
    output_tokens: int
    audio_seconds: float


class UsageReport(msgspec.Struct, kw_only=True):
    """Rows per day, key and kind with non-zero usage, and totals per kind."""

    object: Literal["usage"] = "usage"
    start: str
    end: str
    key_id: str
    data: list[UsageRow]
    totals: dict[str, UsageAmounts]
