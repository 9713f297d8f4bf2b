"""Schemathesis with every check over the served app, bounded for CI (the long run: make reliability).

Refusals of schema-valid input are accepted only as documented in tests/reliability/fuzz_hooks.py;
every other finding (a 5xx, an undocumented status, a schema-valid request refused, a schema-
violating one accepted, a response off its schema) fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import redis as sync_redis

from lexia.queue import ListQueue
from lexia.worker.runtime import Heartbeat
from tests.conftest import TEST_REDIS_URL
from tests.harness import AppFactory
from tests.reliability.fuzz import run_fuzz

FUZZ_SECONDS = int(os.environ.get("LEXIA_FUZZ_SECONDS", "60"))
UNLIMITED = {
    "LEXIA_DEFAULT_REQUESTS_PER_MINUTE": "0", "LEXIA_DEFAULT_TOKENS_PER_MINUTE": "0",
    "LEXIA_DEFAULT_AUDIO_SECONDS_PER_HOUR": "0", "LEXIA_DEFAULT_MAX_CONCURRENT_JOBS": "0",
}


@contextlib.asynccontextmanager
async def heartbeat() -> AsyncIterator[None]:
    """Beat for a worker (so /ready is 200) while the fuzzer runs."""
    client = sync_redis.Redis.from_url(TEST_REDIS_URL)

    async def beat() -> None:
        while True:
            Heartbeat.beat_once(client)
            await asyncio.sleep(5)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        client.close()


async def test_the_fuzzer_finds_nothing(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(queue=ListQueue(), **UNLIMITED)
    _, key = await api.make_key("*", tenant="fuzz", name="fuzzer")
    spare, _ = await api.make_key("*", tenant="fuzz", name="spare")
    async with heartbeat():
        result = await asyncio.to_thread(
            run_fuzz, api.base_url, key, spare.id, max_time=FUZZ_SECONDS, workers=2, seed=20261202,
            report_dir=tmp_path / "report",
        )
    assert result.operations >= 40, result.output[-4000:]
    assert result.cases >= 500, result.output[-4000:]
    assert result.server_errors == 0 and result.failures == 0, result.output[-12000:]
