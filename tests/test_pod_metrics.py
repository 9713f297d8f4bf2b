"""Pod-wide metrics through Redis: lexia_job_duration_seconds{kind} and lexia_webhook_attempts_total{outcome}.

Jobs finished by the worker (real actors on a StubBroker) and by the API's sync path, and webhook
attempts made by the worker, show up on the API's /metrics; the collector renders cumulative
buckets; a Redis outage breaks neither recording nor /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from lexia.engines.base import Engines
from lexia.engines.fakes import FakeDiarizer, FakeSTT
from lexia.metrics import JOB_BUCKETS, HistogramTotals, Metrics, PodTotals, le_label
from lexia.queue import ListQueue
from lexia.services.podmetrics import PodMetrics
from tests.conftest import TEST_REDIS_URL, bearer
from tests.harness import AppFactory
from tests.jobs_support import job_settings, receiver, sql, stub_worker, wait_for, wav_bytes

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call is refused at once
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]



@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def pod_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the `lexia.metrics` logger (the `lexia` logger does not propagate to caplog)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.INFO)
    logger = logging.getLogger("lexia.metrics")
    logger.addHandler(handler)
    saved = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: Any) -> tuple[str, Samples]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text, parse(response.text)


def histogram(samples: Samples, kind: str) -> dict[str, float]:
    """`le` -> cumulative count, plus `count` and `sum`, of one kind (zeros when absent)."""
    name = "lexia_job_duration_seconds"
    out = {
        le: samples.get((f"{name}_bucket", (("kind", kind), ("le", le))), 0.0)
        for le in [*(le_label(b) for b in JOB_BUCKETS), "+Inf"]
    }
    out["count"] = samples.get((f"{name}_count", (("kind", kind),)), 0.0)
    out["sum"] = samples.get((f"{name}_sum", (("kind", kind),)), 0.0)
    return out


def attempts(samples: Samples, outcome: str) -> float:
    return samples.get(("lexia_webhook_attempts_total", (("outcome", outcome),)), 0.0)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def expected_histogram(durations: list[float]) -> dict[str, float]:
    """What observing `durations` adds to a histogram: cumulative buckets, count and sum."""
    out = {le_label(b): float(sum(1 for d in durations if d <= b)) for b in JOB_BUCKETS}
    out["+Inf"] = out["count"] = float(len(durations))
    out["sum"] = sum(durations)
    return out


def assert_histogram(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != "sum"} == {k: v for k, v in want.items() if k != "sum"}
    assert got["sum"] == pytest.approx(want["sum"], abs=1e-4)


def durations_of(kind: str) -> list[float]:
    """started_at -> finished_at of the finished jobs of a kind, from the database."""
    rows = sql(
        "SELECT EXTRACT(EPOCH FROM finished_at - started_at) FROM jobs WHERE kind = %s AND started_at IS NOT NULL"
        " AND finished_at IS NOT NULL", kind,
    )
    return [float(r[0]) for r in rows]


# -- end to end: the worker and the API's sync path ----------------------------------------


async def test_worker_jobs_and_webhook_attempts_appear_on_the_api_metrics(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w, receiver() as ok, receiver([500, 500]) as flaky:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        _, before = await scrape(api.client)
        audio = wav_bytes(2.0, tmp_path / "a.wav")
        ids: list[str] = []
        for path, hook in (("/v1/transcriptions", ok), ("/v1/transcriptions", flaky), ("/v1/diarization", None)):
            data = {"webhook_url": hook.url} if hook is not None else {}
            response = await api.client.post(path, files={"file": ("a.wav", audio, "audio/wav")}, data=data,
                                             headers=bearer(key))
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])

        async def settled() -> bool:
            statuses = sql("SELECT status FROM jobs")
            deliveries = sql("SELECT status FROM webhook_deliveries")
            return len(statuses) == 3 and all(s == ("completed",) for s in statuses) and deliveries == [
                ("succeeded",), ("succeeded",)
            ]

        await wait_for(settled)
        want_transcription = expected_histogram(durations_of("transcription"))
        want_diarization = expected_histogram(durations_of("diarization"))
        assert want_transcription["count"] == 2 and want_diarization["count"] == 1

        async def recorded() -> Samples | None:
            _, now = await scrape(api.client)
            done = (
                histogram(now, "transcription")["count"] - histogram(before, "transcription")["count"] == 2
                and histogram(now, "diarization")["count"] - histogram(before, "diarization")["count"] == 1
                and attempts(now, "success") - attempts(before, "success") == 2
            )
            return now if done else None

        after: Samples = await wait_for(recorded)
        assert_histogram(delta(histogram(after, "transcription"), histogram(before, "transcription")),
                         want_transcription)
        assert_histogram(delta(histogram(after, "diarization"), histogram(before, "diarization")), want_diarization)
        # ok: one success; flaky: two failures (500, 500), then a success.
        assert attempts(after, "success") - attempts(before, "success") == 2
        assert attempts(after, "failure") - attempts(before, "failure") == 2
        assert len(ok.received) == 1 and len(flaky.received) == 3
        text, _ = await scrape(api.client)
        assert "# TYPE lexia_job_duration_seconds histogram" in text
        assert "# TYPE lexia_webhook_attempts_total counter" in text
        assert key not in text and not any(job_id in text for job_id in ids)


async def test_sync_jobs_in_the_api_process_are_observed_and_a_never_started_one_is_not(
    serve_app: AppFactory, tmp_path: Path
) -> None:
    engines = Engines(stt=FakeSTT(), diarizer=FakeDiarizer(), mode="fake")
    api = await serve_app(job_settings(tmp_path), queue=ListQueue(), engines=engines)  # nothing runs async jobs
    _, key = await api.make_key()
    _, before = await scrape(api.client)
    audio = wav_bytes(3.0, tmp_path / "a.wav")
    done = await api.client.post("/v1/diarization/sync", files={"file": ("a.wav", audio, "audio/wav")},
                                 headers=bearer(key))
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text
    queued = await api.client.post("/v1/transcriptions", files={"file": ("a.wav", audio, "audio/wav")},
                                   headers=bearer(key))
    assert queued.status_code == 202
    cancelled = await api.client.delete(f"/v1/jobs/{queued.json()['id']}", headers=bearer(key))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    transcribed = await api.client.post("/v1/transcriptions/sync", files={"file": ("a.wav", audio, "audio/wav")},
                                        headers=bearer(key))
    assert transcribed.status_code == 200 and transcribed.json()["status"] == "completed", transcribed.text
    _, after = await scrape(api.client)
    assert_histogram(delta(histogram(after, "diarization"), histogram(before, "diarization")),
                     expected_histogram(durations_of("diarization")))
    # The sync transcription ends through its own store and is observed too; the one cancelled
    # while queued never ran, so it has no duration.
    assert histogram(after, "transcription")["count"] == histogram(before, "transcription")["count"] + 1


# -- the recorder and the collector --------------------------------------------------------


async def test_collector_renders_cumulative_buckets_from_redis_totals(redis: aioredis.Redis) -> None:
    prefix = f"lexia:metrics:test-{uuid.uuid4().hex}"
    pod = PodMetrics(redis, prefix=prefix)
    for seconds in (0.05, 0.1, 0.3, 2.0, 4000.0):  # 0.1 is on a bound: le="0.1" counts it
        await pod.job_finished("transcription", seconds)
    await pod.job_finished("bogus", 1.0)  # unknown kinds are not recorded (bounded keys and labels)
    await pod.webhook_attempt(success=True)
    for _ in range(2):
        await pod.webhook_attempt(success=False)
    assert sorted([k.decode() async for k in redis.scan_iter(f"{prefix}:*")]) == [
        f"{prefix}:job_duration:transcription", f"{prefix}:webhook_attempts",
    ]
    metrics = Metrics()
    assert "lexia_job_duration_seconds_count" not in metrics.render().decode()  # nothing before a load
    assert await pod.refresh(metrics.pod)
    text = metrics.render().decode()
    cumulative = {"0.1": 2, "0.5": 3, "1.0": 3, "5.0": 4, "15.0": 4, "60.0": 4, "300.0": 4, "900.0": 4,
                  "3600.0": 4, "+Inf": 5}
    for le, count in cumulative.items():
        assert f'lexia_job_duration_seconds_bucket{{kind="transcription",le="{le}"}} {count:.1f}\n' in text
    assert 'lexia_job_duration_seconds_count{kind="transcription"} 5.0\n' in text
    assert 'lexia_job_duration_seconds_sum{kind="transcription"} 4002.45\n' in text
    assert 'lexia_job_duration_seconds_bucket{kind="diarization",le="+Inf"} 0.0\n' in text
    assert 'lexia_job_duration_seconds_count{kind="diarization"} 0.0\n' in text
    assert 'lexia_webhook_attempts_total{outcome="success"} 1.0\n' in text
    assert 'lexia_webhook_attempts_total{outcome="failure"} 2.0\n' in text
    assert "bogus" not in text
    # Prometheus reads it back as one histogram and one counter.
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["lexia_job_duration_seconds"] == "histogram" and types["lexia_webhook_attempts"] == "counter"


def test_collector_buckets_are_cumulative_and_end_with_the_count() -> None:
    metrics = Metrics()
    per_bucket = (1, 0, 2, 0, 0, 0, 1, 0, 0)  # per bound of JOB_BUCKETS; one more observation above 3600
    metrics.pod.update(PodTotals({"diarization": HistogramTotals(per_bucket, count=5, sum=7000.5)},
                                 {"success": 3, "failure": 0}))
    samples = parse(metrics.render().decode())
    got = histogram(samples, "diarization")
    assert [got[le_label(b)] for b in JOB_BUCKETS] == [1, 1, 3, 3, 3, 3, 4, 4, 4]
    assert got["+Inf"] == got["count"] == 5 and got["sum"] == 7000.5
    assert attempts(samples, "success") == 3 and attempts(samples, "failure") == 0


async def test_redis_outage_breaks_neither_recording_nor_metrics(
    start_app: AppFactory, pod_log: list[logging.LogRecord]
) -> None:
    dead = aioredis.from_url(DEAD_REDIS, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        pod = PodMetrics(dead)
        for _ in range(3):
            await pod.job_finished("transcription", 1.0)  # never raises
            await pod.webhook_attempt(success=False)
        warnings = [r for r in pod_log if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "record failed" in warnings[0].getMessage()  # once, not per event
        metrics = Metrics()
        known = PodTotals({"transcription": HistogramTotals((1,) + (0,) * 8, count=1, sum=0.05)}, {"success": 4})
        metrics.pod.update(known)
        assert await pod.refresh(metrics.pod) is False  # a failed read keeps the last snapshot
        assert 'lexia_webhook_attempts_total{outcome="success"} 4.0' in metrics.render().decode()
        assert len([r for r in pod_log if r.levelno == logging.WARNING]) == 2  # "read failed", once
        await pod.refresh(metrics.pod)
        assert len([r for r in pod_log if r.levelno == logging.WARNING]) == 2
    finally:
        await dead.aclose()
    api = await start_app(LEXIA_REDIS_URL=DEAD_REDIS)
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert "# TYPE lexia_job_duration_seconds histogram" in response.text
    assert "# TYPE lexia_webhook_attempts_total counter" in response.text


class RedisProxy:
    """A TCP proxy to the test Redis that can be taken down and brought back on the same port."""

    def __init__(self) -> None:
        url = urlparse(TEST_REDIS_URL)
        self.target = (url.hostname or "127.0.0.1", url.port or 6379)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_recording_survives_an_outage_and_logs_it_once(
    redis: aioredis.Redis, pod_log: list[logging.LogRecord]
) -> None:
    prefix = f"lexia:metrics:test-{uuid.uuid4().hex}"
    proxy = RedisProxy()
    await proxy.up()
    through = aioredis.from_url(f"redis://127.0.0.1:{proxy.port}/{urlparse(TEST_REDIS_URL).path.strip('/') or 0}",
                                socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        pod = PodMetrics(through, prefix=prefix)
        await pod.webhook_attempt(success=True)
        await proxy.down()
        for _ in range(5):  # Redis unreachable: nothing raises, one warning
            await pod.webhook_attempt(success=True)
            await pod.job_finished("diarization", 1.0)
        assert [r.levelno for r in pod_log] == [logging.WARNING]
        await proxy.up()
        await pod.webhook_attempt(success=True)
        assert [r.levelno for r in pod_log] == [logging.WARNING, logging.INFO]  # "works again", once
        await pod.webhook_attempt(success=False)
        assert len(pod_log) == 2
        assert await redis.hgetall(f"{prefix}:webhook_attempts") == {b"success": b"2", b"failure": b"1"}
    finally:
        await through.aclose()
        await proxy.down()
