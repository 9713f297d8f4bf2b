"""Per-key GCRA limits in Redis: headers, 429s, sharing across apps, Redis outages."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import pytest
import redis.asyncio as aioredis

from lexia.errors import RateLimited, ServiceUnavailable
from lexia.services.access.limits import RedisLimiter
from tests.conftest import TEST_REDIS_URL, AppFactory, TestApp, bearer
from tests.test_auth import assert_error

LIMITS = {"requests_per_minute": 60, "tokens_per_minute": 1000, "audio_seconds_per_hour": 3600, "max_concurrent_jobs": 2}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_headers_on_every_authenticated_response(api: TestApp) -> None:
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 10})
    first = await api.client.get("/v1/models", headers=bearer(secret))
    second = await api.client.get("/v1/models", headers=bearer(secret))
    assert first.headers["x-ratelimit-limit"] == "10"
    assert first.headers["x-ratelimit-remaining"] == "9"
    assert second.headers["x-ratelimit-remaining"] == "8"
    assert int(second.headers["x-ratelimit-reset"]) >= 1
    # Error responses of an authenticated request carry them too.
    missing = await api.client.get("/v1/models/nope", headers=bearer(secret))
    assert missing.status_code == 404
    assert missing.headers["x-ratelimit-remaining"] == "7"


async def test_429_with_retry_after_when_requests_exhausted(api: TestApp) -> None:
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 3})
    for _ in range(3):
        assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200
    refused = await api.client.get("/v1/models", headers=bearer(secret))
    error = assert_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-remaining"] == "0"
    # Refused requests are not counted: the wait does not grow.
    again = await api.client.get("/v1/models", headers=bearer(secret))
    assert int(again.headers["retry-after"]) <= int(refused.headers["retry-after"])


async def test_zero_limit_means_unlimited(api: TestApp) -> None:
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 0})
    for _ in range(5):
        assert (await api.client.get("/v1/models", headers=bearer(secret))).status_code == 200


async def test_limit_shared_by_two_app_instances(start_app: AppFactory) -> None:
    first = await start_app()
    second = await start_app()
    _, secret = await first.make_key("llm", limits={"requests_per_minute": 4})
    statuses = []
    for i in range(6):
        app = first if i % 2 == 0 else second
        statuses.append((await app.client.get("/v1/models", headers=bearer(secret))).status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]


async def test_master_switch_off_never_refuses(start_app: AppFactory) -> None:
    api = await start_app(LEXIA_RATE_LIMIT_ENABLED="false")
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 1})
    for _ in range(3):
        response = await api.client.get("/v1/models", headers=bearer(secret))
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "1"


async def test_api_answers_when_redis_down_and_failing_open(start_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    api = await start_app(LEXIA_REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0", LEXIA_RATE_LIMIT_FAIL_OPEN="true")
    _, secret = await api.make_key("llm", limits={"requests_per_minute": 1})
    with caplog.at_level(logging.ERROR, logger="lexia.limits"):
        for _ in range(3):
            response = await api.client.get("/v1/models", headers=bearer(secret))
            assert response.status_code == 200
    outage_lines = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage_lines) == 1  # logged once, not per request
    ready = await api.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "fail"


async def test_api_refuses_with_503_when_redis_down_and_failing_closed(start_app: AppFactory) -> None:
    api = await start_app(LEXIA_REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0", LEXIA_RATE_LIMIT_FAIL_OPEN="false")
    _, secret = await api.make_key("llm")
    response = await api.client.get("/v1/models", headers=bearer(secret))
    assert_error(response, 503, "dependency_unavailable")
    assert response.headers["retry-after"]
    assert (await api.client.get("/health")).status_code == 200


@pytest.fixture
async def limiter() -> RedisLimiter:
    client = aioredis.from_url(TEST_REDIS_URL)
    # A namespace of its own, so runs that happen to share a Redis db cannot interfere.
    return RedisLimiter(client, namespace=f"test:rl:{uuid.uuid4().hex}")


async def test_token_allowance_may_go_negative_then_refuses(limiter: RedisLimiter) -> None:
    limits = dict(LIMITS, requests_per_minute=0)
    decision = await limiter.admit("key_a", limits, ("requests", "tokens"))
    assert decision.meters["tokens"].remaining == 1000
    await limiter.debit("key_a", "tokens", 1500, 1000)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_a", limits, ("requests", "tokens"))
    assert refused.value.code == "tokens_limit_exceeded"
    # 500 tokens over a 1000/min allowance: positive again after ~30 s.
    assert 29 <= refused.value.retry_after <= 32
    assert refused.value.headers["X-RateLimit-Remaining-Tokens"] == "0"


async def test_audio_meter_refuses_with_its_own_code(limiter: RedisLimiter) -> None:
    await limiter.debit("key_b", "audio", 4000, 3600)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_b", LIMITS, ("requests", "audio"))
    assert refused.value.code == "audio_limit_exceeded"


async def test_concurrency_slots_are_limited_and_released(limiter: RedisLimiter) -> None:
    assert await limiter.acquire_slot("key_c", "job1", 2, 60) == 1
    assert await limiter.acquire_slot("key_c", "job2", 2, 60) == 2
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire_slot("key_c", "job3", 2, 60)
    assert refused.value.code == "concurrency_limit_exceeded"
    await limiter.release_slot("key_c", "job1")
    assert await limiter.acquire_slot("key_c", "job3", 2, 60) == 2


async def test_expired_slot_leases_are_reclaimed(limiter: RedisLimiter) -> None:
    await limiter.acquire_slot("key_d", "crashed", 1, 0.01)

    await asyncio.sleep(0.05)
    assert await limiter.acquire_slot("key_d", "next", 1, 60) == 1


async def test_fail_closed_limiter_raises_when_redis_down() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_connect_timeout=0.2)
    closed = RedisLimiter(client, fail_open=False)
    with pytest.raises(ServiceUnavailable):
        await closed.admit("key_e", LIMITS, ("requests",))
    with pytest.raises(ServiceUnavailable):
        await closed.acquire_slot("key_e", "h", 1, 10)


async def test_concurrent_admissions_in_one_batch_respect_the_limit(limiter: RedisLimiter) -> None:

    limits = dict(LIMITS, requests_per_minute=5)
    outcomes = await asyncio.gather(
        *(limiter.admit(f"key_{i % 2}", limits, ("requests",)) for i in range(20)), return_exceptions=True
    )
    admitted = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 10 and len(refused) == 10  # 5 per key, two keys
    remaining = sorted(d.meters["requests"].remaining for d in admitted)
    assert remaining == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


# -- leases: keys with large limits admit from a local share taken from Redis ahead of use ----


def _leasing(namespace: str, fraction: float = 0.25, seconds: float = 60.0) -> RedisLimiter:
    client = aioredis.from_url(TEST_REDIS_URL)
    return RedisLimiter(client, namespace=namespace, lease_fraction=fraction, lease_seconds=seconds)


def _requests(limit: int) -> dict[str, int]:
    return dict(LIMITS, requests_per_minute=limit)


async def _remaining(limiter: RedisLimiter, key: str, limit: int) -> list[int | str]:
    out: list[int | str] = []
    for _ in range(limit + 1):
        try:
            out.append((await limiter.admit(key, _requests(limit), ("requests",))).meters["requests"].remaining)
        except RateLimited as exc:
            out.append(exc.code)
    return out


async def test_leased_admissions_count_exactly_in_one_process() -> None:
    limiter = _leasing(f"test:rl:{uuid.uuid4().hex}")  # 8/min, leases of 2
    assert await _remaining(limiter, "key_l", 8) == [7, 6, 5, 4, 3, 2, 1, 0, "rate_limit_exceeded"]
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_l", _requests(8), ("requests",))
    assert 1 <= refused.value.retry_after <= 8  # one request's worth of a 8/min allowance
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"


async def test_processes_sharing_a_key_never_admit_more_than_the_limit() -> None:
    namespace = f"test:rl:{uuid.uuid4().hex}"
    first, second = _leasing(namespace), _leasing(namespace)  # 12/min, leases of 3
    admitted = 0
    for i in range(30):
        try:
            await (first if i % 3 else second).admit("key_s", _requests(12), ("requests",))
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 12


async def test_concurrent_requests_share_one_lease_request() -> None:
    limiter = _leasing(f"test:rl:{uuid.uuid4().hex}", fraction=0.04)  # 100/min, leases of 4
    calls = 0
    original = limiter._lease

    async def counting(**kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await original(**kwargs)

    limiter._lease = counting  # type: ignore[method-assign,assignment]
    outcomes = await asyncio.gather(*(limiter.admit("key_c", _requests(100), ("requests",)) for _ in range(20)))
    assert calls == 5  # 20 requests, 4 per lease, no lease taken twice
    assert sorted(d.meters["requests"].remaining for d in outcomes) == list(range(80, 100))


async def test_unused_lease_is_given_back_when_it_expires() -> None:
    namespace = f"test:rl:{uuid.uuid4().hex}"
    first = _leasing(namespace, fraction=0.05, seconds=0.05)  # 80/min, leases of 4
    second = _leasing(namespace, fraction=0.05, seconds=60)
    assert (await first.admit("key_g", _requests(80), ("requests",))).meters["requests"].remaining == 79
    # Until the lease expires the other process sees its three unused requests as taken ...
    held = await second.admit("key_g", _requests(80), ("requests",))
    assert held.meters["requests"].remaining == 80 - 1 - 3 - 1
    await asyncio.sleep(0.2)
    # ... afterwards they are back: both processes' leases were debited only for what was used
    # (second still holds three of its own).
    other = _leasing(namespace, fraction=0.05)
    assert (await other.admit("key_g", _requests(80), ("requests",))).meters["requests"].remaining == 80 - 2 - 3 - 1


async def test_close_gives_leases_back() -> None:
    namespace = f"test:rl:{uuid.uuid4().hex}"
    first = _leasing(namespace, fraction=0.05)  # 80/min, leases of 4
    await first.admit("key_x", _requests(80), ("requests",))
    await first.close()
    other = _leasing(namespace, fraction=0.05)
    assert (await other.admit("key_x", _requests(80), ("requests",))).meters["requests"].remaining == 80 - 1 - 1


async def test_small_limits_are_never_leased(limiter: RedisLimiter) -> None:
    namespace = f"test:rl:{uuid.uuid4().hex}"
    first, second = _leasing(namespace, fraction=0.001), _leasing(namespace, fraction=0.001)
    # 1000/min * 0.001 = 1: below a lease of two, each request goes to Redis, so the two
    # processes' headers interleave exactly.
    a = await first.admit("key_n", _requests(1000), ("requests",))
    b = await second.admit("key_n", _requests(1000), ("requests",))
    assert (a.meters["requests"].remaining, b.meters["requests"].remaining) == (999, 998)


async def test_leased_limit_shared_by_two_app_instances(start_app: AppFactory) -> None:
    first = await start_app(LEXIA_RATE_LIMIT_LEASE_FRACTION="0.1")
    second = await start_app(LEXIA_RATE_LIMIT_LEASE_FRACTION="0.1")
    _, secret = await first.make_key("llm", limits={"requests_per_minute": 20})  # leases of 2
    statuses = []
    for i in range(26):
        app = first if i % 2 == 0 else second
        response = await app.client.get("/v1/models", headers=bearer(secret))
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit"] == "20"
    assert statuses.count(200) == 20 and statuses[-1] == 429
