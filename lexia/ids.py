"""Prefixed ULID identifiers (tr_, dz_, key_, whd_, req_)."""

from __future__ import annotations

import random
import re
import time
from typing import Any

from ulid import ULID

_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters
_HEAD_SHIFTS = tuple(range(80, -1, -10))  # 90 bits (2 zero + 48 time + 40 random): 18 characters
_LOW_LIMIT = (1 << 40) - 1
_state: list[Any] = [-1, "", 0]  # millisecond, its 18 characters, the low 40 random bits
_PATTERNS: dict[str, re.Pattern[str]] = {}


def new_id(prefix: str) -> str:
    """A new time-ordered id such as ``key_01JDX7Z9Y8X7W6V5T4S3R2Q1P0``."""
    return f"{prefix}_{ULID()}"


def new_request_id() -> str:
    """`req_<ULID>` for request ids: same format, faster, monotonic within a millisecond.

    Request ids are correlation tags, not secrets or resource ids, so Python's PRNG is enough;
    resource ids keep `new_id` (python-ulid, OS randomness). Within one millisecond the random
    part counts up (ULID's monotonic mode), so only its last 40 bits need encoding per id.
    """
    global _state  # noqa: PLW0603
    ms = time.time_ns() // 1_000_000
    state = _state
    if ms != state[0] or state[2] >= _LOW_LIMIT:
        # 48-bit time (10 characters, with 2 zero bits) + the high 40 random bits (8 characters).
        head = (ms << 40) | random.getrandbits(40)
        encoded = "".join([_PAIRS[(head >> shift) & 1023] for shift in _HEAD_SHIFTS])
        state = _state = [ms, encoded, random.getrandbits(39)]
    else:
        state[2] += 1
    low = state[2]
    pairs = _PAIRS
    return f"req_{state[1]}{pairs[low >> 30]}{pairs[(low >> 20) & 1023]}{pairs[(low >> 10) & 1023]}{pairs[low & 1023]}"


def id_pattern(*prefixes: str) -> str:
    """The regular expression of ids of these types (for documentation; `is_id` checks one)."""
    names = "|".join(re.escape(p) for p in prefixes)
    return rf"^({names})_{_ULID}$"


def is_id(value: str, prefix: str) -> bool:
    """True if value is a well-formed id of the given type."""
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(rf"^{re.escape(prefix)}_{_ULID}$")
    return bool(pattern.match(value))
