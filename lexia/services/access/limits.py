"""Per-key rate limits: GCRA in one Redis Lua script, shared by every process."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.errors import RateLimited, ServiceUnavailable
from lexia.services.access.limit_scripts import ACQUIRE, ADMIT, DEBIT, LEASE

log = logging.getLogger("lexia.limits")

# meter name -> (limit name, period in seconds, refusal code, header suffix)
METERS: dict[str, tuple[str, int, str, str]] = {
    "requests": ("requests_per_minute", 60, "rate_limit_exceeded", ""),
    "tokens": ("tokens_per_minute", 60, "tokens_limit_exceeded", "-Tokens"),
    "audio": ("audio_seconds_per_hour", 3600, "audio_limit_exceeded", "-Audio"),
}

_HEADER_NAMES = {
    meter: (f"X-RateLimit-Limit{suffix}", f"X-RateLimit-Remaining{suffix}", f"X-RateLimit-Reset{suffix}")
    for meter, (_, _, _, suffix) in METERS.items()
}

class MeterState(NamedTuple):
    """The header values of one meter after a decision (a tuple: made on every request)."""

    limit: int
    remaining: int
    reset: int


class Decision(NamedTuple):
    """Outcome of an admission check: header values per meter (limit 0 = unlimited)."""

    meters: Mapping[str, MeterState]

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* headers (§1.9) for the meters checked."""
        out: dict[str, str] = {}
        for meter, state in self.meters.items():
            limit, remaining, reset = _HEADER_NAMES[meter]
            out[limit] = str(state.limit)
            out[remaining] = str(state.remaining)
            out[reset] = str(state.reset)
        return out


class RateLimiter(Protocol):
    """What the API needs from a limiter."""

    async def admit(self, key_id: str, limits: Mapping[str, int], meters: tuple[str, ...]) -> Decision:
        """Admit one request or raise RateLimited (headers included)."""
        ...

    def admit_from_lease(self, key_id: str, limits: Mapping[str, int], meters: tuple[str, ...]) -> Decision | None:
        """Admit from allowance already held by this process, or None (then call `admit`)."""
        ...

    async def debit(self, key_id: str, meter: str, amount: float, limit: int) -> None:
        """Charge an amount known after admission."""
        ...


def _unlimited_state(limit: int) -> MeterState:
    return MeterState(limit=limit, remaining=limit, reset=0)


@dataclass(slots=True)
class _Lease:
    """Requests of one key taken from Redis ahead of use by this process."""

    limit: int
    left: int  # not yet handed out
    remaining: int  # the key's remaining allowance in Redis right after the lease was taken
    reset: int  # X-RateLimit-Reset as of the lease
    token_ms: float  # the GCRA increment of one request, for giving back
    expires: float  # monotonic


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A lease request that got nothing: the key is out of allowance."""

    remaining: int
    reset: int
    retry_after: int


class RedisLimiter:
    """GCRA limiter in Redis; fails open or closed when Redis is unreachable."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        enabled: bool = True,
        fail_open: bool = True,
        namespace: str = "lexia:rl",
        concurrency_retry_after: int = 10,
        outage_backoff: float = 1.0,
        lease_fraction: float = 0.0,
        lease_seconds: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._enabled = enabled
        self._fail_open = fail_open
        self._ns = namespace
        self._concurrency_retry_after = concurrency_retry_after
        self._admit = redis.register_script(ADMIT)
        self._debit = redis.register_script(DEBIT)
        self._acquire = redis.register_script(ACQUIRE)
        self._lease = redis.register_script(LEASE)
        self._lease_fraction = lease_fraction
        self._lease_seconds = lease_seconds
        self._leases: dict[str, _Lease] = {}
        self._lease_loads: dict[str, asyncio.Task[_Lease | _Refusal]] = {}
        self._down_until = 0.0
        self._outage_logged = False
        self._backoff = outage_backoff
        self._pending: list[tuple[list[str], list[float | int], asyncio.Future[list[int]]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    def _key(self, key_id: str, meter: str) -> str:
        return f"{self._ns}:{key_id}:{meter}"

    def _redis_usable(self) -> bool:
        return self._clock.monotonic() >= self._down_until

    def _on_outage(self, exc: Exception) -> None:
        # Skip Redis for a moment so every request does not wait for a timeout.
        self._down_until = self._clock.monotonic() + self._backoff
        if not self._outage_logged:
            self._outage_logged = True
            log.error(
                "rate limiting: Redis unreachable (%s); failing %s",
                type(exc).__name__,
                "open (requests admitted)" if self._fail_open else "closed (503)",
            )

    def _on_recovery(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            log.warning("rate limiting: Redis reachable again")

    def _degraded(self, limits: Mapping[str, int], meters: tuple[str, ...]) -> Decision:
        if not self._fail_open:
            raise ServiceUnavailable("Rate limiting is unavailable: Redis is unreachable")
        return Decision({m: _unlimited_state(limits[METERS[m][0]]) for m in meters})

    async def admit(self, key_id: str, limits: Mapping[str, int], meters: tuple[str, ...]) -> Decision:
        """Check every meter, debit one request, or raise RateLimited with the tripped meter."""
        if not self._enabled:
            return Decision({m: _unlimited_state(limits[METERS[m][0]]) for m in meters})
        if not self._redis_usable():
            return self._degraded(limits, meters)
        if meters == ("requests",) and self._lease_fraction > 0:
            limit = limits["requests_per_minute"]
            size = int(limit * self._lease_fraction)
            if size > 1:
                return await self._admit_leased(key_id, limit, size, limits)
        keys: list[str] = []
        args: list[float | int] = [len(meters)]
        for meter in meters:
            limit_name, period, _, _ = METERS[meter]
            keys.append(self._key(key_id, meter))
            args += [limits[limit_name], period * 1000, 1 if meter == "requests" else 2]
        try:
            raw = await self._batched(keys, args)
        except (RedisError, OSError) as exc:
            self._on_outage(exc)
            return self._degraded(limits, meters)
        self._on_recovery()
        states: dict[str, MeterState] = {}
        for i, meter in enumerate(meters):
            limit = limits[METERS[meter][0]]
            remaining, reset_ms = int(raw[2 * i]), int(raw[2 * i + 1])
            if remaining < 0:
                states[meter] = _unlimited_state(limit)
            else:
                states[meter] = MeterState(limit, remaining, math.ceil(reset_ms / 1000))
        decision = Decision(states)
        refused = int(raw[-2])
        if refused:
            meter = meters[refused - 1]
            limit_name, _, code, _ = METERS[meter]
            retry = math.ceil(int(raw[-1]) / 1000)
            raise RateLimited(
                f"Rate limit exceeded: {limit_name} is {limits[limit_name]} for this key; "
                f"retry in {max(1, retry)} s",
                retry_after=retry,
                code=code,
                headers=decision.headers(),
            )
        return decision

    def admit_from_lease(self, key_id: str, limits: Mapping[str, int], meters: tuple[str, ...]) -> Decision | None:
        """`admit` without awaiting when this process holds a live lease for the key; else None."""
        if meters != ("requests",):
            return None
        lease = self._leases.get(key_id)
        limit = limits["requests_per_minute"]
        if lease is None or lease.left <= 0 or lease.limit != limit or self._clock.monotonic() >= lease.expires:
            return None
        lease.left -= 1
        return Decision({"requests": MeterState(limit, lease.remaining + lease.left, lease.reset)})

    async def _admit_leased(self, key_id: str, limit: int, size: int, limits: Mapping[str, int]) -> Decision:
        """Admit from this process's lease of the key's requests; take a new lease when it runs out.

        Leases are debited in Redis when taken, so all processes together never admit more than
        the limit; a lease's unused part is given back when it expires, and until then other
        processes see that much less allowance. Concurrent requests share one lease request.
        """
        while True:
            decision = self.admit_from_lease(key_id, limits, ("requests",))
            if decision is not None:
                return decision
            loading = self._lease_loads.get(key_id)
            if loading is None:
                loading = asyncio.ensure_future(self._take_lease(key_id, limit, size))
                self._lease_loads[key_id] = loading
                loading.add_done_callback(lambda _: self._lease_loads.pop(key_id, None))
            try:
                got = await asyncio.shield(loading)
            except (RedisError, OSError) as exc:
                self._on_outage(exc)
                return self._degraded(limits, ("requests",))
            self._on_recovery()
            if isinstance(got, _Refusal):
                headers = Decision({"requests": MeterState(limit, got.remaining, got.reset)}).headers()
                raise RateLimited(
                    f"Rate limit exceeded: requests_per_minute is {limit} for this key; "
                    f"retry in {max(1, got.retry_after)} s",
                    retry_after=got.retry_after,
                    code="rate_limit_exceeded",
                    headers=headers,
                )

    async def _take_lease(self, key_id: str, limit: int, size: int) -> _Lease | _Refusal:
        old = self._leases.pop(key_id, None)
        refund = old.left * old.token_ms if old is not None else 0.0
        period = METERS["requests"][1] * 1000
        granted, remaining, reset_ms, retry_ms = (
            int(v)
            for v in await self._lease(
                keys=[self._key(key_id, "requests")], args=[time.time() * 1000.0, limit, period, size, refund]
            )
        )
        if granted == 0:
            return _Refusal(remaining, math.ceil(reset_ms / 1000), math.ceil(retry_ms / 1000))
        lease = _Lease(
            limit=limit,
            left=granted,
            remaining=remaining,
            reset=math.ceil(reset_ms / 1000),
            token_ms=period / limit,
            expires=self._clock.monotonic() + self._lease_seconds,
        )
        if len(self._leases) > 100_000:
            self._leases.clear()
        self._leases[key_id] = lease
        asyncio.get_running_loop().call_later(self._lease_seconds, self._expire_lease, key_id, lease)
        return lease

    def _expire_lease(self, key_id: str, lease: _Lease) -> None:
        """Give an expired lease's unused requests back, so other processes can use them."""
        if self._leases.get(key_id) is not lease or key_id in self._lease_loads:
            return  # replaced already (the replacement gave the rest back) or being replaced
        del self._leases[key_id]
        if lease.left > 0:
            task = asyncio.ensure_future(self._give_back(key_id, lease, lease.left))
            lease.left = 0
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _give_back(self, key_id: str, lease: _Lease, left: int) -> None:
        try:
            await self._lease(
                keys=[self._key(key_id, "requests")],
                args=[time.time() * 1000.0, lease.limit, METERS["requests"][1] * 1000, 0, left * lease.token_ms],
            )
        except (RedisError, OSError) as exc:
            self._on_outage(exc)

    async def close(self) -> None:
        """Give every lease's unused requests back (at shutdown)."""
        leases, self._leases = self._leases, {}
        await asyncio.gather(
            *(self._give_back(key_id, lease, lease.left) for key_id, lease in leases.items() if lease.left > 0)
        )
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _batched(self, keys: list[str], args: list[float | int]) -> asyncio.Future[list[int]]:
        """Queue one admission; every admission queued in this loop tick goes in one call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush_pending)
        return future

    def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send_batch(self, batch: list[tuple[list[str], list[float | int], asyncio.Future[list[int]]]]) -> None:
        keys: list[str] = []
        args: list[float | int] = [time.time() * 1000.0]
        for k, a, _ in batch:
            keys += k
            args += a
        try:
            raw = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        offset = 0
        for k, _, future in batch:
            size = 2 * len(k) + 2
            if not future.done():
                future.set_result([int(v) for v in raw[offset : offset + size]])
            offset += size

    async def debit(self, key_id: str, meter: str, amount: float, limit: int) -> None:
        """Charge tokens or audio seconds known after admission (never refuses)."""
        if not self._enabled or limit <= 0 or amount <= 0 or not self._redis_usable():
            return
        period = METERS[meter][1] * 1000
        try:
            await self._debit(
                keys=[self._key(key_id, meter)], args=[time.time() * 1000.0, limit, period, amount]
            )
        except (RedisError, OSError) as exc:
            self._on_outage(exc)

    async def acquire_slot(self, key_id: str, holder: str, limit: int, lease_seconds: float) -> int:
        """Take one of the key's concurrency slots (jobs, sync calls); return slots held."""
        if not self._enabled or not self._redis_usable():
            if not self._enabled or self._fail_open:
                return 0
            raise ServiceUnavailable("Rate limiting is unavailable: Redis is unreachable")
        now_ms = int(time.time() * 1000)
        try:
            ok, held = await self._acquire(
                keys=[self._key(key_id, "slots")],
                args=[now_ms, limit, holder, now_ms + int(lease_seconds * 1000)],
            )
        except (RedisError, OSError) as exc:
            self._on_outage(exc)
            if self._fail_open:
                return 0
            raise ServiceUnavailable("Rate limiting is unavailable: Redis is unreachable") from None
        if not ok:
            raise RateLimited(
                f"Concurrency limit exceeded: max_concurrent_jobs is {limit} for this key",
                retry_after=self._concurrency_retry_after,
                code="concurrency_limit_exceeded",
                headers={"X-RateLimit-Limit-Jobs": str(limit), "X-RateLimit-Remaining-Jobs": "0"},
            )
        return int(held)

    async def slot_holders(self) -> dict[str, list[str]]:
        """Every key's concurrency-slot holders (the sweeper reconciles them with the jobs)."""
        out: dict[str, list[str]] = {}
        prefix, suffix = f"{self._ns}:", ":slots"
        async for name in self._redis.scan_iter(match=f"{prefix}*{suffix}", count=500):
            text = name.decode() if isinstance(name, bytes) else str(name)
            holders = await self._redis.zrange(text, 0, -1)
            if holders:
                key_id = text[len(prefix) : -len(suffix)]
                out[key_id] = [h.decode() if isinstance(h, bytes) else str(h) for h in holders]
        return out

    async def release_slot(self, key_id: str, holder: str) -> None:
        """Give a concurrency slot back."""
        try:
            await self._redis.zrem(self._key(key_id, "slots"), holder)
        except (RedisError, OSError) as exc:
            self._on_outage(exc)
