"""Shapes every route shares: the error envelope, list pages, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

import msgspec

T = TypeVar("T")


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with millisecond precision and a Z suffix."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class ErrorDetail(msgspec.Struct, kw_only=True):
    """The `error` member of every error response (API.md §1.8)."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct, kw_only=True):
    """`{"error": {...}}`: the body of every 4xx and 5xx answer."""

    error: ErrorDetail


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """An OpenAI list object (API.md §1.5): newest first; page on with `after=<last_id>`."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


def page(items: list[T], has_more: bool) -> Page[T]:
    """A Page of items that carry an `id`."""
    first = getattr(items[0], "id", None) if items else None
    last = getattr(items[-1], "id", None) if items else None
    return Page(data=items, first_id=first, last_id=last, has_more=has_more)
