"""API keys: generation, HMAC storage, authentication with a short cache, and management."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, get_args

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db.keys import KeyTable, LastAdminKey, UnknownTenant
from lexia.db.rows import KeyRow
from lexia.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied, ValidationFailed
from lexia.ids import is_id, new_id
from lexia.schemas.admin import ApiKeyObject, CreatedApiKey, KeyLimitValues, Scope
from lexia.schemas.common import iso

SCOPES: tuple[str, ...] = get_args(Scope)
LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "audio_seconds_per_hour", "max_concurrent_jobs")
KEY_PATTERN = re.compile(r"^lx_[A-Za-z0-9_-]{43}$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PREFIX_LENGTH = 12
TOUCH_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    limits: Mapping[str, int | None]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    created_by: str | None
    row: KeyRow = field(repr=False, compare=False)

    def allows(self, scope: str) -> bool:
        """True if the key carries the scope (or `*`)."""
        return "*" in self.scopes or scope in self.scopes

    def is_expired(self, now: datetime) -> bool:
        """True once expires_at has passed."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """Fields of a PATCH; absent fields are not in `fields`."""

    fields: Mapping[str, Any] = field(default_factory=dict)


def generate_key() -> str:
    """A new plaintext key: `lx_` + 43 URL-safe characters (32 random bytes)."""
    return "lx_" + secrets.token_urlsafe(32)


def hash_key(pepper: str, key: str) -> bytes:
    """HMAC-SHA256 of the key under the pepper: the only form stored."""
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).digest()


def parse_duration(text: str) -> timedelta:
    """Parse `30d`, `12h`, `45m`, `90s` or `2w` into a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and one of s, m, h, d, w")
    amount, unit = int(match.group(1)), match.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return timedelta(seconds=amount * seconds)


def normalise_scopes(scopes: Iterable[str], *, param: str = "scopes") -> tuple[str, ...]:
    """Validate and de-duplicate scopes, keeping the canonical order."""
    given = [s.strip() for s in scopes]
    if not given or not all(given):
        raise ValidationFailed("scopes must be a non-empty list of scope names", param=param)
    unknown = sorted(set(given) - set(SCOPES))
    if unknown:
        raise ValidationFailed(
            f"unknown scope(s) {', '.join(unknown)}; valid scopes are {', '.join(SCOPES)}",
            param=param,
        )
    return tuple(s for s in SCOPES if s in given)


def _row_to_key(row: KeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes),
        limits={name: getattr(row, name) for name in LIMIT_NAMES},
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        created_at=row.created_at,
        created_by=row.created_by,
        row=row,
    )


class KeyService:
    """Creates, authenticates and manages API keys of one deployment."""

    def __init__(
        self,
        table: KeyTable,
        *,
        pepper: str,
        previous_pepper: str = "",
        cache_seconds: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._table = table
        self._clock = clock
        self._pepper = pepper
        self._previous = previous_pepper
        self._cache_seconds = cache_seconds
        # hash -> (key, monotonic time fetched). Bounded by the number of live keys.
        self._cache: dict[bytes, tuple[ApiKey | None, float]] = {}
        self._loading: dict[bytes, asyncio.Task[ApiKey | None]] = {}
        self._generation = 0  # bumped by forget(): loads started earlier must not repopulate
        self._touched: dict[str, float] = {}
        self._pending_touch: dict[str, datetime] = {}

    # -- authentication -------------------------------------------------------------------

    def authenticate_cached(self, plaintext: str) -> ApiKey | None:
        """`authenticate` without awaiting when the cache can answer; None when it cannot.

        The hot path of every request: a fresh cache entry for a valid key is accepted here,
        and everything else (misses, stale entries, unknown keys, the previous pepper) is left
        to `authenticate`.
        """
        if not KEY_PATTERN.match(plaintext):
            raise AuthenticationFailed("The API key is malformed", code="invalid_api_key")
        entry = self._fresh_entry(hash_key(self._pepper, plaintext))
        return None if entry is None or entry[0] is None else self._accept(entry[0])

    async def authenticate(self, plaintext: str) -> ApiKey:
        """Resolve a presented key; raise AuthenticationFailed with the precise code."""
        if not KEY_PATTERN.match(plaintext):
            raise AuthenticationFailed("The API key is malformed", code="invalid_api_key")
        digest = hash_key(self._pepper, plaintext)
        key = await self._lookup(digest)
        if key is None and self._previous:
            old = hash_key(self._previous, plaintext)
            key = await self._lookup(old)
            if key is not None:
                await self._rehash(key.id, old, digest)
        if key is None:
            raise AuthenticationFailed("The API key is not valid", code="invalid_api_key")
        return self._accept(key)

    def _accept(self, key: ApiKey) -> ApiKey:
        now = self._clock.now()
        if key.revoked_at is not None:
            raise AuthenticationFailed("The API key has been revoked", code="revoked_api_key")
        if key.is_expired(now):
            raise AuthenticationFailed("The API key has expired", code="expired_api_key")
        self._note_use(key.id, now)
        return key

    def _fresh_entry(self, digest: bytes) -> tuple[ApiKey | None, float] | None:
        """The cache entry of a digest if younger than cache_seconds (its key None: unknown key).

        Under load the entry is refreshed ahead of expiry in the background, so requests never
        queue on the database for their key.
        """
        entry = self._cache.get(digest)
        if entry is None:
            return None
        age = self._clock.monotonic() - entry[1]
        if age >= self._cache_seconds:
            return None
        if age >= self._cache_seconds / 2 and digest not in self._loading:
            self._start_load(digest)
        return entry

    async def _lookup(self, digest: bytes) -> ApiKey | None:
        """The key for a digest, from a cache no older than cache_seconds; concurrent misses
        share one query."""
        entry = self._fresh_entry(digest)
        if entry is not None:
            return entry[0]
        loading = self._loading.get(digest) or self._start_load(digest)
        return await asyncio.shield(loading)

    def _start_load(self, digest: bytes) -> asyncio.Task[ApiKey | None]:
        task = asyncio.ensure_future(self._fetch(digest))
        self._loading[digest] = task
        task.add_done_callback(lambda done: self._loaded(digest, done))
        return task

    def _loaded(self, digest: bytes, task: asyncio.Task[ApiKey | None]) -> None:
        self._loading.pop(digest, None)
        # A refresh ahead of expiry may have no request waiting on it; its failure (the database
        # down) is then retrieved here rather than reported as "never retrieved". A waiting
        # request gets the same exception through its own await.
        if not task.cancelled():
            task.exception()

    async def _fetch(self, digest: bytes) -> ApiKey | None:
        clock = self._clock.monotonic()
        generation = self._generation
        found = await self._table.by_hash(digest)
        key = None
        # The index lookup finds the row; the constant-time compare is the actual check.
        if found is not None and hmac.compare_digest(found[1], digest):
            key = _row_to_key(found[0])
        if len(self._cache) > 100_000:
            self._cache.clear()
        if generation == self._generation:
            self._cache[digest] = (key, clock)
        return key

    async def _rehash(self, key_id: str, old: bytes, new: bytes) -> None:
        await self._table.rehash(key_id, old, new)
        self._cache.pop(old, None)

    def _note_use(self, key_id: str, now: datetime) -> None:
        clock = self._clock.monotonic()
        last = self._touched.get(key_id)
        if last is None or clock - last >= TOUCH_INTERVAL:
            self._touched[key_id] = clock
            self._pending_touch[key_id] = now

    async def flush_last_used(self) -> int:
        """Write the batched last_used_at times (at most one write per key per minute)."""
        if not self._pending_touch:
            return 0
        pending, self._pending_touch = self._pending_touch, {}
        await self._table.touch(pending)
        return len(pending)

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached lookups (all, or those of one key) after a change in this process."""
        self._generation += 1
        self._loading.clear()
        if key_id is None:
            self._cache.clear()
            return
        for digest, (key, _) in list(self._cache.items()):
            if key is not None and key.id == key_id:
                del self._cache[digest]

    # -- management -----------------------------------------------------------------------

    async def create(
        self,
        *,
        tenant_id: str,
        name: str,
        scopes: Sequence[str],
        limits: Mapping[str, int | None] | None = None,
        expires_at: datetime | None = None,
        created_by: str | None = None,
        create_tenant: bool = False,
    ) -> tuple[ApiKey, str]:
        """Store a new key; return it with its plaintext (shown once)."""
        if not TENANT_PATTERN.match(tenant_id):
            raise ValidationFailed(
                "tenant must match [a-z0-9][a-z0-9_-]{0,62}", param="tenant"
            )
        if not 1 <= len(name) <= 100:
            raise ValidationFailed("name must be 1 to 100 characters", param="name")
        scopes = normalise_scopes(scopes)
        plaintext = generate_key()
        values: dict[str, Any] = {
            "id": new_id("key"),
            "tenant_id": tenant_id,
            "name": name,
            "prefix": plaintext[:PREFIX_LENGTH],
            "key_hash": hash_key(self._pepper, plaintext),
            "scopes": list(scopes),
            "expires_at": expires_at,
            "created_at": self._clock.now(),
            "created_by": created_by,
        }
        for limit in LIMIT_NAMES:
            values[limit] = (limits or {}).get(limit)
        try:
            row = await self._table.insert(values, create_tenant=create_tenant)
        except UnknownTenant:
            raise NotFound(f"tenant {tenant_id} does not exist", param="tenant") from None
        return _row_to_key(row), plaintext

    async def get(self, tenant_id: str | None, key_id: str) -> ApiKey:
        """One key; another tenant's key (or a malformed id) is a 404."""
        row = await self._table.get(tenant_id, key_id) if is_id(key_id, "key") else None
        if row is None:
            raise NotFound(f"No API key with id {key_id!r}")
        return _row_to_key(row)

    def now(self) -> datetime:
        """The service clock's time (expiry checks)."""
        return self._clock.now()

    async def page(
        self,
        tenant_id: str | None,
        *,
        limit: int = 20,
        after: str | None = None,
        include_revoked: bool = False,
    ) -> tuple[list[ApiKey], bool]:
        """Newest first; return (page, has_more); `after` must be a key id (422)."""
        if after is not None and not is_id(after, "key"):
            raise ValidationFailed("after must be an id starting with key_", param="after")
        rows, more = await self._table.page(tenant_id, limit=limit, after=after, include_revoked=include_revoked)
        return [_row_to_key(r) for r in rows], more

    async def update(self, tenant_id: str, key_id: str, changes: KeyUpdate) -> ApiKey:
        """Apply a PATCH; a revoked key answers 409 key_revoked."""
        current = await self.get(tenant_id, key_id)
        if current.revoked_at is not None:
            raise Conflict("The API key is revoked and cannot be changed", code="key_revoked")
        values = dict(changes.fields)
        if "scopes" in values:
            values["scopes"] = list(normalise_scopes(values["scopes"]))
        if not values:
            return current
        losing_admin = "scopes" in values and not {"admin", "*"} & set(values["scopes"])
        try:
            row = await self._table.update(tenant_id, current.row, values, guard_admin=losing_admin)
        except LastAdminKey:
            raise _last_admin() from None
        self.forget(key_id)
        return _row_to_key(row)

    async def revoke(self, tenant_id: str | None, key_id: str, *, guard_last_admin: bool = True) -> ApiKey:
        """Revoke now (idempotent); refuse to revoke the tenant's last active admin key."""
        current = await self.get(tenant_id, key_id)
        if current.revoked_at is not None:
            return current
        try:
            row = await self._table.revoke(current.row, guard_admin=guard_last_admin)
        except LastAdminKey:
            raise _last_admin() from None
        self.forget(key_id)
        return _row_to_key(row) if row is not None else await self.get(tenant_id, key_id)

    async def rotate(self, tenant_id: str | None, key_id: str) -> tuple[ApiKey, str]:
        """Create a copy of the key with a new secret, then revoke the old one."""
        old = await self.get(tenant_id, key_id)
        if old.revoked_at is not None:
            raise Conflict("The API key is revoked and cannot be rotated", code="key_revoked")
        new, plaintext = await self.create(
            tenant_id=old.tenant_id,
            name=old.name,
            scopes=old.scopes,
            limits=old.limits,
            expires_at=old.expires_at,
            created_by=old.id,
        )
        await self.revoke(old.tenant_id, old.id, guard_last_admin=False)
        return new, plaintext


def _last_admin() -> Conflict:
    return Conflict(
        "This is the tenant's last active admin key; create another admin key first", code="last_admin_key"
    )


def check_grantable(caller: ApiKey, scopes: Sequence[str]) -> None:
    """A key may only grant scopes it holds itself; `*` only from a `*` key."""
    if "*" in caller.scopes:
        return
    if "*" in scopes:
        raise PermissionDenied("Only a key with scope '*' can grant scope '*'", param="scopes")
    missing = sorted(set(scopes) - set(caller.scopes))
    if missing:
        raise PermissionDenied(
            f"The calling key cannot grant scope(s) it does not hold: {', '.join(missing)}",
            param="scopes",
        )


def with_limits(key: ApiKey, defaults: Mapping[str, int]) -> dict[str, int]:
    """The effective limits of a key (null means the server default; 0 means unlimited)."""
    return {
        name: defaults[name] if key.limits.get(name) is None else int(key.limits[name] or 0)
        for name in LIMIT_NAMES
    }



def key_view(key: ApiKey) -> ApiKeyObject:
    """The api_key object of §8.2."""
    return ApiKeyObject(**_view_fields(key))


def created_key_view(key: ApiKey, plaintext: str) -> CreatedApiKey:
    """The creation response: the api_key object and the plaintext key (shown once)."""
    return CreatedApiKey(**_view_fields(key), key=plaintext)


def _view_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "tenant": key.tenant_id,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "limits": KeyLimitValues(**{name: key.limits.get(name) for name in LIMIT_NAMES}),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
        "created_at": iso(key.created_at) or "",
        "created_by": key.created_by,
    }
