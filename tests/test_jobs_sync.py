"""Sync jobs seen through the jobs API: sync diarization, and cancelling sync work via /v1/jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from lexia.engines.base import Audio, DiarizeOptions, Engines, SpeakerTurn
from lexia.engines.fakes import FakeDiarizer, FakeSTT
from lexia.queue import ListQueue
from tests.conftest import bearer
from tests.harness import AppFactory
from tests.jobs_support import job_settings, sql, wait_for, wav_bytes
from tests.test_auth import assert_error


class BrokenDiarizer(FakeDiarizer):
    async def diarize(self, audio: Audio, options: DiarizeOptions) -> list[SpeakerTurn]:
        raise RuntimeError("pipeline crashed")


async def start(serve_app: AppFactory, tmp_path: Path, *, stt: FakeSTT | None = None,
                diarizer: FakeDiarizer | None = None) -> tuple[Any, str]:
    engines = Engines(stt=stt or FakeSTT(), diarizer=diarizer or FakeDiarizer(), mode="fake")
    api = await serve_app(job_settings(tmp_path), queue=ListQueue(), engines=engines)
    _, key = await api.make_key()
    return api, key


async def post(api: Any, key: str, path: str, audio: bytes, headers: dict[str, str] | None = None,
               **data: Any) -> Any:
    return await api.client.post(path, files={"file": ("a.wav", audio, "audio/wav")}, data=data,
                                 headers={**bearer(key), **(headers or {})})


async def test_sync_diarization_answers_the_completed_diarization(serve_app: AppFactory, tmp_path: Path) -> None:
    api, key = await start(serve_app, tmp_path)
    audio = wav_bytes(5.0, tmp_path / "a.wav")
    response = await post(api, key, "/v1/diarization/sync", audio, {"Idempotency-Key": "d1"}, max_speakers="3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["speaker_count"] == 3 and len(body["segments"]) == 3
    assert body["max_speakers_expected"] == 3 and body["audio_duration"] == 5.0
    assert sql("SELECT mode, attempts FROM jobs") == [("sync", 1)]
    assert sql("SELECT kind, diarization_seconds FROM usage_events WHERE kind IS NOT NULL") == [("diarization", 5.0)]
    replay = await post(api, key, "/v1/diarization/sync", audio, {"Idempotency-Key": "d1"}, max_speakers="3")
    assert replay.status_code == 200 and replay.headers["idempotency-replayed"] == "true"
    assert replay.json()["id"] == body["id"]
    assert_error(await post(api, key, "/v1/diarization/sync", audio, webhook_url="http://127.0.0.1:9/h"), 422,
                 "validation_error", "webhook_url")
    assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []


async def test_sync_diarization_failure_is_500_and_stored(serve_app: AppFactory, tmp_path: Path) -> None:
    api, key = await start(serve_app, tmp_path, diarizer=BrokenDiarizer())
    response = await post(api, key, "/v1/diarization/sync", wav_bytes(3.0, tmp_path / "a.wav"))
    error = assert_error(response, 500, "diarization_failed")
    assert "pipeline crashed" not in error["message"]  # no internals in messages
    assert sql("SELECT status, error_code FROM jobs") == [("error", "diarization_failed")]


async def test_cancelling_a_running_sync_diarization_answers_cancelled(serve_app: AppFactory, tmp_path: Path) -> None:
    api, key = await start(serve_app, tmp_path, diarizer=FakeDiarizer(delay=1.0))
    request = asyncio.create_task(post(api, key, "/v1/diarization/sync", wav_bytes(4.0, tmp_path / "a.wav")))

    async def running() -> list[str]:  # the run registered in this process (just after its row's commit)
        return list(api.services.sync_jobs._runs)

    (job_id,) = await wait_for(running)
    run = api.services.sync_jobs._runs[job_id]
    cancelled = await api.client.delete(f"/v1/jobs/{job_id}", headers=bearer(key))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The run in this process is stopped by the DELETE itself, not later by its row watch.
    assert run.watch.lost
    response = await request
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["segments"] is None


async def test_cancelling_a_running_sync_transcription_via_the_jobs_api(serve_app: AppFactory, tmp_path: Path) -> None:
    api, key = await start(serve_app, tmp_path, stt=FakeSTT(segment_delay=0.5))
    request = asyncio.create_task(post(api, key, "/v1/transcriptions/sync", wav_bytes(20.0, tmp_path / "a.wav")))

    async def running() -> list[tuple[Any, ...]]:
        return sql("SELECT id FROM jobs WHERE status = 'processing'")

    ((job_id,),) = await wait_for(running)
    job = (await api.client.get(f"/v1/jobs/{job_id}", headers=bearer(key))).json()
    assert job["mode"] == "sync" and job["kind"] == "transcription" and job["status"] == "processing"
    cancelled = await api.client.delete(f"/v1/jobs/{job_id}", headers=bearer(key))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    response = await request
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    listed = (await api.client.get("/v1/transcriptions", headers=bearer(key))).json()["data"]
    assert [(t["id"], t["status"]) for t in listed] == [(job_id, "cancelled")]
