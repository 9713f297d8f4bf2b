"""Prefixed ULID identifiers (tr_, dz_, key_, whd_, req_)."""

from __future__ import annotations

import random
import re
import time

from ulid import ULID

_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters
_RANDOM_SHIFTS = tuple(range(70, -1, -10))  # 80 random bits: the last 16 characters
_time_part: tuple[int, str] = (-1, "")  # the last millisecond and its 10 characters
_PATTERNS: dict[str, re.Pattern[str]] = {}


def new_id(prefix: str) -> str:
    """A new time-ordered id such as ``key_01JDX7Z9Y8X7W6V5T4S3R2Q1P0``."""
    return f"{prefix}_{ULID()}"


def new_request_id() -> str:
    """`req_<ULID>` for request ids: same format, faster, from a non-cryptographic generator.

    Request ids are correlation tags, not secrets or resource ids, so Python's PRNG is enough;
    resource ids keep `new_id` (python-ulid, OS randomness).
    """
    # A ULID is 26 Crockford characters: 10 for the 48-bit millisecond time (with 2 zero bits),
    # 16 for 80 random bits; two characters per 10 bits. The time part is encoded once per ms.
    global _time_part  # noqa: PLW0603
    ms = time.time_ns() // 1_000_000
    if ms != _time_part[0]:
        _time_part = (ms, "".join([_PAIRS[(ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0)]))
    bits = random.getrandbits(80)
    return "req_" + _time_part[1] + "".join([_PAIRS[(bits >> shift) & 1023] for shift in _RANDOM_SHIFTS])


def is_id(value: str, prefix: str) -> bool:
    """True if value is a well-formed id of the given type."""
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = _PATTERNS[prefix] = re.compile(rf"^{re.escape(prefix)}_{_ULID}$")
    return bool(pattern.match(value))
