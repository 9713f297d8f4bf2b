"""The real actors in a real Dramatiq Worker on a StubBroker: jobs, retries, cancellation, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lexia.engines.base import Audio, Engines, Segment, STTOptions, Transcript
from lexia.engines.fakes import FakeDiarizer, FakeSTT
from lexia.queue import ListQueue
from lexia.services.jobs.kinds import TRANSCRIPTION
from tests.conftest import bearer
from tests.harness import AppFactory, services_for
from tests.jobs_support import (
    job_settings,
    sql,
    stub_worker,
    wait_for,
    wait_status,
    wav_bytes,
    worker_module,
)
from tests.stt.httpserver import body
from tests.stt.httpserver import serve as file_server
from tests.test_auth import assert_error


class CountingSTT(FakeSTT):
    """FakeSTT that counts segments it produced and can fail its first `fail` calls."""

    def __init__(self, *, segment_delay: float = 0.0, fail: int = 0) -> None:
        super().__init__(segment_delay=segment_delay)
        self.segments = 0
        self.calls = 0
        self.fail = fail
        self.ended = False  # the last call returned or was cancelled

    async def transcribe(
        self,
        audio: Audio,
        options: STTOptions,
        progress: Callable[[float], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")

        def counted(segment: Segment) -> None:
            self.segments += 1
            if on_segment is not None:
                on_segment(segment)

        self.ended = False
        try:
            return await super().transcribe(audio, options, progress, counted)
        finally:
            self.ended = True


async def test_drained_fails_when_no_worker_consumes_the_queue(tmp_path: Path) -> None:
    """The condition the tests wait on cannot pass by itself: with the worker stopped it times out."""
    from dramatiq.errors import QueueJoinTimeout

    with stub_worker(job_settings(tmp_path)) as w:
        w.worker.stop(timeout=10_000)
        await w.queue.enqueue("transcription.run", "tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0V", queue="transcription")
        with pytest.raises(QueueJoinTimeout):
            await w.drained(timeout=0.5)


def engines(stt: FakeSTT | None = None) -> Engines:
    return Engines(stt=stt or FakeSTT(), diarizer=FakeDiarizer(), mode="fake")


async def upload(api: Any, key: str, audio: bytes, path: str = "/v1/transcriptions", **data: Any) -> dict[str, Any]:
    response = await api.client.post(path, files={"file": ("a.wav", audio, "audio/wav")}, data=data,
                                     headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_transcription_actor_completes_jobs_with_engines_loaded_once(
    serve_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_module()  # the worker package reads the environment when first imported
    import lexia.worker.runtime as runtime_module

    opened: list[Any] = []
    real_open = runtime_module.open_engines

    def counting_open(settings: Any) -> Any:
        opened.append(settings)
        return real_open(settings)

    monkeypatch.setattr(runtime_module, "open_engines", counting_open)
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w:
        assert len(opened) == 1 and opened[0].llm.enabled is False  # at boot, before any job
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        audio = wav_bytes(7.0, tmp_path / "a.wav")
        ids = [(await upload(api, key, audio, metadata=f'{{"n": "{i}"}}'))["id"] for i in range(5)]
        for job_id in ids:
            done = await wait_status(api.client, f"/v1/transcriptions/{job_id}", bearer(key), ("completed",))
            assert done["text"] and len(done["words"]) == 14 and done["audio_duration"] == 7.0
            assert done["progress"] == 1.0 and done["queue_position"] is None and done["completed_at"]
        assert len(opened) == 1  # engines are loaded once per worker process, never per job
        job = (await api.client.get(f"/v1/jobs/{ids[0]}", headers=bearer(key))).json()
        assert job["status"] == "completed" and job["attempts"] == 1 and job["stage"] is None
        assert job["started_at"] and job["finished_at"]
        usage = sql("SELECT kind, audio_seconds, request_id FROM usage_events WHERE kind IS NOT NULL ORDER BY id")
        assert sorted(r[2] for r in usage) == sorted(ids) and {r[:2] for r in usage} == {("stt", 7.0)}
        assert list((tmp_path / "storage").rglob("*.audio")) == []  # deleted after processing (retention 0)


async def test_speaker_labels_record_stt_and_diarization_usage(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(5.0, tmp_path / "a.wav"), speaker_labels="true")
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",))
        assert [u["speaker"] for u in done["utterances"]] == ["A", "B", "A"]
        assert sorted(sql("SELECT kind, audio_seconds, diarization_seconds FROM usage_events WHERE kind IS NOT NULL")) \
            == [("diarization", 0.0, 5.0), ("stt", 5.0, 0.0)]
        usage = (await api.client.get("/v1/usage", params={"key_id": "all"}, headers=bearer(key))).json()
        assert usage["totals"]["stt"]["audio_seconds"] == 5.0
        assert usage["totals"]["diarization"]["audio_seconds"] == 5.0


async def test_diarization_actor_completes_and_exports_rttm(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key("diarization,jobs")
        job = await upload(api, key, wav_bytes(5.0, tmp_path / "a.wav"), "/v1/diarization", num_speakers="2")
        done = await wait_status(api.client, f"/v1/diarization/{job['id']}", bearer(key), ("completed",))
        assert done["speaker_count"] == 2 and done["speakers_expected"] == 2
        assert done["segments"] == [
            {"speaker": "A", "start": 0, "end": 2000}, {"speaker": "B", "start": 2000, "end": 4000},
            {"speaker": "A", "start": 4000, "end": 5000},
        ]
        assert done["speakers"] == [
            {"speaker": "A", "duration": 3000, "segment_count": 2}, {"speaker": "B", "duration": 2000, "segment_count": 1},
        ]
        response = await api.client.get(f"/v1/diarization/{job['id']}/rttm", headers=bearer(key))
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert response.text.splitlines() == [
            f"SPEAKER {job['id']} 1 0.000 2.000 <NA> <NA> A <NA> <NA>",
            f"SPEAKER {job['id']} 1 2.000 2.000 <NA> <NA> B <NA> <NA>",
            f"SPEAKER {job['id']} 1 4.000 1.000 <NA> <NA> A <NA> <NA>",
        ]
        assert sql("SELECT kind, diarization_seconds FROM usage_events WHERE kind IS NOT NULL") == [("diarization", 5.0)]
        tomb = (await api.client.delete(f"/v1/diarization/{job['id']}", headers=bearer(key))).json()
        assert tomb["segments"] is None and tomb["speakers"] is None and tomb["speaker_count"] == 2
        assert tomb["status"] == "completed" and tomb["deleted_at"]
        assert_error(await api.client.get(f"/v1/diarization/{job['id']}/rttm", headers=bearer(key)), 410, "deleted")


async def test_audio_url_job_is_fetched_by_the_worker(serve_app: AppFactory, tmp_path: Path) -> None:
    remote, stop = file_server()
    remote.routes["/a.wav"] = body(wav_bytes(4.0, tmp_path / "r.wav"))
    try:
        settings = job_settings(tmp_path)
        with stub_worker(settings) as w:
            api = await serve_app(settings, queue=w.queue)
            _, key = await api.make_key()
            ok = await api.client.post("/v1/transcriptions", json={"audio_url": remote.url("/a.wav")},
                                       headers=bearer(key))
            missing = await api.client.post("/v1/transcriptions", json={"audio_url": remote.url("/gone.wav")},
                                            headers=bearer(key))
            done = await wait_status(api.client, f"/v1/transcriptions/{ok.json()['id']}", bearer(key), ("completed",))
            assert done["audio_duration"] == 4.0 and done["audio_url"] == remote.url("/a.wav")
            failed = await wait_status(api.client, f"/v1/transcriptions/{missing.json()['id']}", bearer(key),
                                       ("error",))
            assert failed["error_code"] == "audio_fetch_failed" and "404" in failed["error"]
            job = (await api.client.get(f"/v1/jobs/{failed['id']}", headers=bearer(key))).json()
            assert job["attempts"] == 1 and job["error"]["code"] == "audio_fetch_failed"  # not retried
    finally:
        stop()


async def test_progress_is_committed_while_the_job_runs(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    with stub_worker(settings, engines=engines(CountingSTT(segment_delay=0.3))) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(20.0, tmp_path / "a.wav"))
        seen: list[tuple[str, float, str | None]] = []

        async def moving() -> bool:
            body = (await api.client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))).json()
            seen.append((body["status"], body["progress"], body["stage"]))
            return body["status"] == "completed"

        await wait_for(moving, every=0.05)
        middle = [p for s, p, _ in seen if s == "processing" and 0 < p < 1]
        assert middle and middle == sorted(middle)  # visible and never decreasing
        assert any(stage == "transcribing" for _, _, stage in seen)


async def test_cancel_while_processing_stops_the_engine(serve_app: AppFactory, tmp_path: Path) -> None:
    stt = CountingSTT(segment_delay=0.4)
    settings = job_settings(tmp_path)
    with stub_worker(settings, engines=engines(stt)) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(40.0, tmp_path / "a.wav"), webhook_url="http://127.0.0.1:9/h")

        async def started() -> bool:
            return stt.segments >= 1

        await wait_for(started)
        response = await api.client.delete(f"/v1/jobs/{job['id']}", headers=bearer(key))
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        await w.drained()  # the attempt has ended: its heartbeat saw the cancel and stopped the engine
        assert stt.ended and stt.segments < 8  # stopped at a segment boundary, long before its 8 segments
        body = (await api.client.get(f"/v1/transcriptions/{job['id']}", headers=bearer(key))).json()
        assert body["status"] == "cancelled" and body["text"] is None and body["words"] is None
        assert_error(await api.client.delete(f"/v1/jobs/{job['id']}", headers=bearer(key)), 409, "not_cancellable")

        async def metered() -> list[tuple[Any, ...]]:
            return sql("SELECT status, audio_seconds FROM usage_events WHERE request_id = %s", job["id"])

        ((status, seconds),) = await wait_for(metered)
        assert status == 499 and 0 < seconds < 40  # the part processed before the cancel
        events = sql("SELECT event FROM webhook_deliveries WHERE resource_id = %s", job["id"])
        assert events == [("transcript.cancelled",)]
        assert list((tmp_path / "storage").rglob("*.audio")) == []


async def test_queued_job_never_starts_once_cancelled(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    queue = ListQueue()
    api = await serve_app(settings, queue=queue)
    _, key = await api.make_key()
    job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"))
    assert (await api.client.delete(f"/v1/jobs/{job['id']}", headers=bearer(key))).status_code == 200
    stt = CountingSTT()
    with stub_worker(settings, engines=engines(stt)) as w:
        await w.queue.enqueue("transcription.run", job["id"], queue="transcription")  # the message arrives after the cancel
        await w.drained()  # the actor ran and acknowledged it
    assert stt.calls == 0
    assert sql("SELECT status, attempts, started_at FROM jobs WHERE id = %s", job["id"]) == [("cancelled", 0, None)]


async def test_transient_engine_failure_is_retried_with_backoff(serve_app: AppFactory, tmp_path: Path) -> None:
    stt = CountingSTT(fail=1)
    settings = job_settings(tmp_path, LEXIA_JOB_LEASE_SECONDS="0.5")
    with stub_worker(settings, engines=engines(stt)) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"))
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed", "error"))
        assert done["status"] == "completed" and done["error"] is None and done["error_code"] is None
        assert (await api.client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))).json()["attempts"] == 2
        assert stt.calls == 2


async def test_job_fails_once_its_attempts_are_spent(serve_app: AppFactory, tmp_path: Path) -> None:
    stt = CountingSTT(fail=99)
    settings = job_settings(tmp_path, LEXIA_JOB_LEASE_SECONDS="0.3", LEXIA_JOB_MAX_ATTEMPTS="2")
    with stub_worker(settings, engines=engines(stt)) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"), webhook_url="http://127.0.0.1:9/h")

        seen: list[str] = []

        async def ended() -> bool:
            seen.append(sql("SELECT status FROM jobs WHERE id = %s", job["id"])[0][0])
            return seen[-1] == "error"

        await wait_for(ended, every=0.02)
        assert set(seen[:-1]) <= {"queued", "processing"}  # no intermediate `error` between attempts
        body = (await api.client.get(f"/v1/transcriptions/{job['id']}", headers=bearer(key))).json()
        assert body["error_code"] == "transcription_failed" and "RuntimeError" in body["error"]
        assert stt.calls == 2
        (payload,) = sql("SELECT payload FROM webhook_deliveries WHERE resource_id = %s", job["id"])[0]
        assert payload["type"] == "transcript.error" and payload["error"]["code"] == "transcription_failed"


async def test_attempt_time_limit_ends_the_job_with_timeout(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_JOB_TIMEOUT_SECONDS="0.5")
    with stub_worker(settings, engines=engines(CountingSTT(segment_delay=2))) as w:
        api = await serve_app(settings, queue=w.queue)
        _, key = await api.make_key()
        job = await upload(api, key, wav_bytes(10.0, tmp_path / "a.wav"))
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("error",))
        assert done["error_code"] == "timeout" and "0.5 s" in done["error"]


async def test_sweeper_enqueues_a_job_committed_but_never_enqueued(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    broken = ListQueue(fail=True)  # the API "crashes" between commit and enqueue
    api = await serve_app(settings, queue=broken)
    _, key = await api.make_key()
    job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"))
    assert broken.sent == [] and job["status"] == "queued"
    with stub_worker(settings):
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",),
                                 timeout=15)
    assert done["text"]
    assert sql("SELECT enqueues, attempts FROM jobs WHERE id = %s", job["id"]) == [(2, 1)]


async def test_job_of_a_lost_worker_runs_again_after_its_lease(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path)
    api = await serve_app(settings, queue=ListQueue())
    _, key = await api.make_key()
    job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"))
    async with services_for(job_settings(tmp_path, LEXIA_JOB_LEASE_SECONDS="1")) as dead:
        claimed = await dead.lifecycle.claim(job["id"], TRANSCRIPTION, "dead-host:1")  # claimed, then it "dies"
    assert claimed is not None and claimed.attempts == 1
    with stub_worker(settings):
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("completed",),
                                 timeout=15)
    assert done["text"]
    assert sql("SELECT attempts, worker <> 'dead-host:1' FROM jobs WHERE id = %s", job["id"]) == [(2, True)]


async def test_job_whose_workers_keep_dying_ends_in_error(serve_app: AppFactory, tmp_path: Path) -> None:
    settings = job_settings(tmp_path, LEXIA_JOB_MAX_ATTEMPTS="2")
    api = await serve_app(settings, queue=ListQueue())
    _, key = await api.make_key()
    job = await upload(api, key, wav_bytes(3.0, tmp_path / "a.wav"))
    async with services_for(job_settings(tmp_path, LEXIA_JOB_LEASE_SECONDS="0.2", LEXIA_JOB_MAX_ATTEMPTS="2")) as dead:
        for _ in range(2):
            assert await dead.lifecycle.claim(job["id"], TRANSCRIPTION, "dead-host:1") is not None
            await asyncio.sleep(0.3)
    with stub_worker(settings):
        done = await wait_status(api.client, f"/v1/transcriptions/{job['id']}", bearer(key), ("error",), timeout=15)
    assert done["error_code"] == "internal_error" and "2 attempts" in done["error"]


def test_each_job_kind_and_webhook_delivery_has_a_queue_of_its_own(tmp_path: Path) -> None:
    """So a worker pod can specialise: `dramatiq lexia.worker.actors --queues diarization`."""
    with stub_worker(job_settings(tmp_path)) as w:
        declared = w.broker.get_declared_queues()
        assert {"transcription", "diarization", "webhooks"} <= declared
        assert {actor.queue_name for actor in w.broker.actors.values()} == {"transcription", "diarization", "webhooks"}
