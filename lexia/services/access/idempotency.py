"""Idempotency-Key handling (§1.7): key syntax, request fingerprints, the in-progress lock.

A key is scoped to its tenant and stored on the job it created, with the request's fingerprint
(route, every form/JSON field, SHA-256 of the uploaded bytes) and an expiry. While a first
request with a key is still being received, a short Redis lock answers later ones with 409
idempotency_key_in_use; once its job is committed, later requests are compared with it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lexia.errors import Conflict, InvalidRequest

log = logging.getLogger("lexia.idempotency")

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
LOCK_SECONDS = 900


def parse_key(value: str | None) -> str | None:
    """The header's value, or None; 400 malformed_request unless 1..255 printable ASCII characters."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_LENGTH or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters")
    return value


def fingerprint(route: str, fields: dict[str, Any], upload_sha256: str | None) -> str:
    """SHA-256 of the route, every field (canonical JSON) and the uploaded bytes' digest."""
    canonical = msgspec.json.encode({"route": route, "fields": fields, "file": upload_sha256}, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def reused() -> Conflict:
    """409 for a key already used with another request."""
    return Conflict(
        f"This {HEADER} was already used with a different request; use a new key",
        code="idempotency_key_reused",
    )


class KeyLock:
    """A Redis lock held while the first request with a key is received and stored."""

    def __init__(self, redis: aioredis.Redis, tenant_id: str, key: str, owner: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        self._name = f"lexia:idem:{tenant_id}:{digest}"
        self._owner = owner
        self._redis = redis
        self.held = False

    async def acquire(self) -> None:
        """Take the lock or answer 409 idempotency_key_in_use (Redis down: proceed unlocked)."""
        try:
            self.held = bool(await self._redis.set(self._name, self._owner, nx=True, ex=LOCK_SECONDS))
        except (RedisError, OSError) as exc:
            log.warning("idempotency lock unavailable (%s); relying on the database", type(exc).__name__)
            return
        if not self.held:
            raise Conflict(
                f"A request with this {HEADER} is still in progress; retry when it has finished",
                code="idempotency_key_in_use",
            )

    async def release(self) -> None:
        """Drop the lock if this request holds it."""
        if not self.held:
            return
        self.held = False
        try:
            current = await self._redis.get(self._name)
            if current is not None and (current.decode() if isinstance(current, bytes) else current) == self._owner:
                await self._redis.delete(self._name)
        except (RedisError, OSError) as exc:
            log.warning("idempotency lock not released (%s); it expires by itself", type(exc).__name__)
