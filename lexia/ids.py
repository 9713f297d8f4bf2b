"""Prefixed ULID identifiers (tr_, dz_, key_, whd_, req_)."""

from __future__ import annotations

import re

from ulid import ULID

_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
_PATTERNS: dict[str, re.Pattern[str]] = {}


def new_id(prefix: str) -> str:
    """A new time-ordered id such as ``key_01JDX7Z9Y8X7W6V5T4S3R2Q1P0``."""
    return f"{prefix}_{ULID()}"


def is_id(value: str, prefix: str) -> bool:
    """True if value is a well-formed id of the given type."""
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(rf"^{re.escape(prefix)}_{_ULID}$")
    return bool(pattern.match(value))
