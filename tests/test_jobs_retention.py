"""Retention: results kept for their TTL then erased, audio removed after processing or its hours,
idempotency keys released after 24 h, lost sync jobs ended; the purge runs inside the worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lexia.queue import ListQueue
from lexia.services.jobs.retention import Retention
from tests.conftest import bearer
from tests.harness import AppFactory, services_for
from tests.jobs_support import job_settings, sql, stub_worker, wait_for, wait_status, wav_bytes
from tests.test_auth import assert_error


def files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "storage").rglob("*") if p.is_file())


def retention(api: Any) -> Retention:
    return api.services.retention  # type: ignore[no-any-return]


async def upload(api: Any, key: str, tmp_path: Path, headers: dict[str, str] | None = None, **data: Any) -> Any:
    return await api.client.post(
        "/v1/transcriptions", files={"file": ("a.wav", wav_bytes(3.0, tmp_path / "a.wav"), "audio/wav")},
        data=data, headers={**bearer(key), **(headers or {})},
    )


async def test_expired_results_are_erased_by_the_worker_purge(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_RETENTION_PURGE_SECONDS="0.2")
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = (await upload(api, key, tmp_path, result_retention_days="1", metadata='{"p": "x"}',
                            webhook_url="http://127.0.0.1:9/h")).json()
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",))
        expires = datetime.fromisoformat(done["expires_at"].replace("Z", "+00:00"))
        completed = datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
        assert abs(expires - completed - timedelta(days=1)) < timedelta(seconds=1)
        assert (await api.client.get(f"/v1/transcriptions/{job['id']}/srt", headers=bearer(key))).status_code == 200
        sql("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = %s", job["id"])

        async def erased() -> dict[str, Any] | None:
            body = (await api.client.get(f"/v1/transcriptions/{job['id']}", headers=bearer(key))).json()
            return body if body["deleted_at"] else None

        tomb = await wait_for(erased, timeout=10)
    assert tomb["status"] == "completed" and tomb["text"] is None and tomb["words"] is None
    assert tomb["metadata"] is None and tomb["audio_filename"] is None and tomb["language_code"] == "en"
    assert tomb["audio_duration"] == 3.0
    assert_error(await api.client.get(f"/v1/transcriptions/{job['id']}/srt", headers=bearer(key)), 410, "deleted")
    ((payload,),) = sql("SELECT payload FROM webhook_deliveries WHERE resource_id = %s", job["id"])
    assert payload["metadata"] is None


async def test_audio_is_kept_for_its_retention_hours_then_removed(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        kept = (await upload(api, key, tmp_path, audio_retention_hours="2")).json()
        dropped = (await upload(api, key, tmp_path)).json()
        for job in (kept, dropped):
            await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",))
    assert [p.name for p in files(tmp_path)] == [f"{kept['id']}.audio"]
    ((path, expires),) = sql("SELECT audio_path, audio_expires_at FROM jobs WHERE id = %s", kept["id"])
    assert abs(expires - datetime.now(UTC) - timedelta(hours=2)) < timedelta(minutes=1)
    assert sql("SELECT audio_path FROM jobs WHERE id = %s", dropped["id"]) == [(None,)]
    report = await retention(api).purge()
    assert report.audio_removed == 0 and Path(path).exists()
    report = await retention(api).purge(now=datetime.now(UTC) + timedelta(hours=3))
    assert report.audio_removed == 1 and files(tmp_path) == []
    assert sql("SELECT audio_path FROM jobs WHERE id = %s", kept["id"]) == [(None,)]
    body = (await api.client.get(f"/v1/transcriptions/{kept['id']}", headers=bearer(key))).json()
    assert body["text"] and body["deleted_at"] is None  # the transcript itself is kept for its own TTL


async def test_zero_result_retention_keeps_results_until_deleted(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = (await upload(api, key, tmp_path, result_retention_days="0")).json()
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",))
    assert done["expires_at"] is None and done["result_retention_days"] == 0
    assert (await retention(api).purge(now=datetime.now(UTC) + timedelta(days=3650))).expired == 0


async def test_tenant_retention_defaults_apply_to_new_jobs(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    before = (await upload(api, key, tmp_path)).json()
    assert (before["audio_retention_hours"], before["result_retention_days"]) == (0, 30)
    patched = await api.client.patch("/v1/admin/tenant", json={"audio_retention_hours": 5, "result_retention_days": 7},
                                     headers=bearer(key))
    assert patched.status_code == 200
    after = (await upload(api, key, tmp_path)).json()
    assert (after["audio_retention_hours"], after["result_retention_days"]) == (5, 7)
    override = (await upload(api, key, tmp_path, audio_retention_hours="0")).json()
    assert override["audio_retention_hours"] == 0


async def test_idempotency_keys_expire_after_their_ttl(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    first = (await upload(api, key, tmp_path, headers={"Idempotency-Key": "k1"})).json()
    ((expires,),) = sql("SELECT idempotency_expires_at FROM jobs WHERE id = %s", first["id"])
    assert abs(expires - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=1)
    sql("UPDATE jobs SET idempotency_expires_at = now() - interval '1 second'")
    second = await upload(api, key, tmp_path, headers={"Idempotency-Key": "k1"})  # expired: a new job
    assert second.status_code == 202 and "idempotency-replayed" not in second.headers
    assert second.json()["id"] != first["id"]
    sql("UPDATE jobs SET idempotency_expires_at = now() - interval '1 second' WHERE id = %s", second.json()["id"])
    assert (await retention(api).purge()).keys_released == 1
    assert sql("SELECT count(*) FROM jobs WHERE idempotency_key IS NOT NULL") == [(0,)]


async def test_sweeper_ends_sync_jobs_whose_process_is_gone(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    key, _ = await api.make_key()
    sql(
        "INSERT INTO jobs (id, tenant_id, key_id, kind, mode, status, attempts, lease_expires_at, created_at) "
        "VALUES ('tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0V', 'acme', %s, 'transcription', 'sync', 'processing', 1, "
        "now() - interval '1 second', now())",
        key.id,
    )
    queue = ListQueue()
    async with services_for(job_settings(tmp_path, LEXIA_JOB_REQUEUE_SECONDS="60"), queue) as worker:
        report = await worker.sweeper.sweep()
    assert report.sync_failed == 1 and queue.sent == []
    assert sql("SELECT status, error_code FROM jobs") == [("error", "internal_error")]


async def test_sweeper_does_not_duplicate_recently_enqueued_jobs(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    job = (await upload(api, key, tmp_path)).json()
    queue = ListQueue()
    async with services_for(job_settings(tmp_path, LEXIA_JOB_REQUEUE_SECONDS="60"), queue) as worker:
        sweeper = worker.sweeper
        assert (await sweeper.sweep()).jobs_enqueued == 0  # enqueued moments ago
        later = datetime.now(UTC) + timedelta(seconds=61)
        assert (await sweeper.sweep(now=later)).jobs_enqueued == 1
        assert (await sweeper.sweep(now=later + timedelta(seconds=61))).jobs_enqueued == 0  # the wait doubles
        assert (await sweeper.sweep(now=later + timedelta(seconds=121))).jobs_enqueued == 1
    assert queue.ids("transcription.run") == [job["id"], job["id"]]


async def test_delete_while_processing_cancels_erases_and_removes_audio(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_FAKE_ENGINE_DELAY="0.2")
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = (await upload(api, key, tmp_path, metadata='{"who": "bob"}')).json()
        await wait_status(api.client, f"/v1/jobs/{job['id']}", bearer(key), ("processing",))
        tomb = (await api.client.delete(f"/v1/transcriptions/{job['id']}", headers=bearer(key))).json()
        assert tomb["status"] == "cancelled" and tomb["deleted_at"] and tomb["metadata"] is None
        assert files(tmp_path) == []

        async def metered() -> bool:
            return bool(sql("SELECT 1 FROM usage_events WHERE request_id = %s", job["id"]))

        await wait_for(metered)
    body = (await api.client.get(f"/v1/transcriptions/{job['id']}", headers=bearer(key))).json()
    assert body == tomb


async def test_sweeper_gives_back_slots_of_ended_jobs(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    key, _ = await api.make_key()
    for job_id, status in (("tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0A", "completed"), ("tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0B", "processing")):
        sql(
            "INSERT INTO jobs (id, tenant_id, key_id, kind, mode, status, attempts, created_at) "
            "VALUES (%s, 'acme', %s, 'transcription', 'async', %s, 1, now())",
            job_id, key.id, status,
        )
    svc = api.services
    limiter = svc.limiter
    # The completed job's release was lost (Redis down at the time); the running one still holds
    # its slot, and so do a /v1/audio call and a request whose row is not committed yet.
    for holder in ("tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0A", "tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0B", "req_audio", "tr_not_yet"):
        await limiter.acquire_slot(key.id, holder, 10, 3600)
    async with services_for(job_settings(tmp_path, LEXIA_JOB_REQUEUE_SECONDS="60")) as worker:
        report = await worker.sweeper.sweep()
    assert report.slots_released == 1
    held = (await limiter.slot_holders())[key.id]
    assert sorted(held) == ["req_audio", "tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0B", "tr_not_yet"]
    assert await limiter.acquire_slot(key.id, "another", 10, 60) == 4


async def test_a_job_whose_enqueue_failed_is_sent_by_the_next_sweep(serve_app: AppFactory, tmp_path: Path) -> None:
    """Redis down at submit: the job is accepted (stored), marked unsent, and enqueued by the very
    next sweep rather than after LEXIA_JOB_REQUEUE_SECONDS (issue 10, item 9)."""
    broken = ListQueue(fail=True)
    api = await serve_app(job_settings(tmp_path), queue=broken)
    _, key = await api.make_key()
    response = await upload(api, key, tmp_path)
    assert response.status_code == 202
    job = response.json()
    queue = ListQueue()
    async with services_for(job_settings(tmp_path, LEXIA_JOB_REQUEUE_SECONDS="120"), queue) as worker:
        assert (await worker.sweeper.sweep()).jobs_enqueued == 1
        assert (await worker.sweeper.sweep()).jobs_enqueued == 0  # sent now: the usual wait applies again
    assert queue.ids("transcription.run") == [job["id"]]


async def test_a_redis_restart_or_outage_reenqueues_every_queued_job_at_once(
    serve_app: AppFactory, tmp_path: Path
) -> None:
    """Redis keeps nothing on disk here: after it restarts (a new run id) or was unreachable, every
    queued job is enqueued again on the next sweep, however recently it was enqueued."""
    from lexia.worker.runtime import WorkerRuntime

    api = await serve_app(job_settings(tmp_path), queue=ListQueue())
    _, key = await api.make_key()
    job = (await upload(api, key, tmp_path)).json()
    queue = ListQueue()
    runtime = WorkerRuntime(job_settings(tmp_path, LEXIA_JOB_REQUEUE_SECONDS="120"), queue=queue, background=False)
    services = await runtime.start()
    try:
        await runtime._sweep(services)  # learns Redis' run id; the job was enqueued moments ago
        assert queue.sent == []
        runtime._redis_run_id = "a-previous-redis-run"  # what a restarted Redis looks like
        await runtime._sweep(services)
        assert queue.ids("transcription.run") == [job["id"]]
        runtime._broker_gap = True  # a pass failed on Redis since
        await runtime._sweep(services)
        assert queue.ids("transcription.run") == [job["id"], job["id"]]
        await runtime._sweep(services)  # nothing lost since: the usual wait applies
        assert len(queue.sent) == 2
    finally:
        await runtime.stop()
