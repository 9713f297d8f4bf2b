"""POST /v1/transcriptions/sync, GET /v1/transcriptions/{id} and the exports, over raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lexia.db.migrations import libpq_dsn
from lexia.engines.base import Audio, DiarizeOptions, SpeakerTurn, STTOptions, Transcript
from lexia.engines.fakes import FakeDiarizer, FakeSTT
from tests.conftest import TEST_DB_URL, bearer
from tests.harness import AppFactory, TestApp
from tests.stt.media import wav
from tests.test_auth import assert_error

JSON = "application/json"
TRANSCRIPT_FIELDS = {
    "id", "object", "status", "audio_url", "audio_filename", "audio_duration", "speech_model", "language_code",
    "language_detection", "language_confidence", "punctuate", "format_text", "keyterms_prompt", "prompt",
    "speaker_labels", "speakers_expected", "speaker_options", "text", "confidence", "words", "utterances",
    "warnings", "progress", "queue_position", "error", "error_code", "webhook_url", "webhook_auth",
    "webhook_auth_header_name", "webhook_status_code", "audio_retention_hours", "result_retention_days",
    "metadata", "created_at", "completed_at", "expires_at", "deleted_at",
}


@dataclass
class Stt:
    """An app with fake engines, a key with scope stt and its storage directory."""

    api: TestApp
    key: str
    sample: Path

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.key)

    async def sync(self, path: Path | None = None, *, name: str = "call.wav", **data: Any) -> Any:
        content = (path or self.sample).read_bytes()
        return await self.api.client.post(
            "/v1/transcriptions/sync", files={"file": (name, content, "audio/wav")}, data=data, headers=self.auth
        )


@pytest.fixture
async def stt(serve_app: AppFactory, tmp_path: Path) -> AsyncIterator[Stt]:
    api = await serve_app()
    _, key = await api.make_key("stt,usage")
    yield Stt(api, key, wav(tmp_path / "sample.wav", 7.0))
    assert api.leftovers() == [], "a request left audio in the storage dir"


def db_row(job_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        return conn.execute(
            "SELECT status, mode, kind, error_code, progress, audio_path FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()


async def test_sync_upload_returns_the_completed_transcript(stt: Stt) -> None:
    response = await stt.sync(metadata='{"ticket": "4711"}', keyterms_prompt=["Lexia", "GPU"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TRANSCRIPT_FIELDS
    assert body["object"] == "transcript" and body["status"] == "completed" and body["id"].startswith("tr_")
    assert body["audio_filename"] == "call.wav" and body["audio_url"] is None
    assert body["audio_duration"] == 7.0 and body["speech_model"] == "lexia-fake-stt"
    assert body["language_code"] == "en" and body["language_detection"] is True
    assert body["keyterms_prompt"] == ["Lexia", "GPU"] and body["metadata"] == {"ticket": "4711"}
    assert body["progress"] == 1.0 and body["error"] is None and body["utterances"] is None
    assert body["text"] == " ".join(w["text"] for w in body["words"])
    assert body["completed_at"].endswith("Z") and body["expires_at"] is not None
    for word in body["words"]:
        assert set(word) == {"text", "start", "end", "confidence", "speaker"}
        assert isinstance(word["start"], int) and 0 <= word["start"] <= word["end"] <= 7000
        assert word["speaker"] is None
    assert body["confidence"] == 0.9
    assert response.headers["x-ratelimit-limit-jobs"] == "16"
    assert response.headers["x-ratelimit-remaining-jobs"] == "15"
    assert "x-ratelimit-remaining-audio" in response.headers
    assert db_row(body["id"])[:3] == ("completed", "sync", "transcription")
    again = await stt.api.client.get(f"/v1/transcriptions/{body['id']}", headers=stt.auth)
    assert again.status_code == 200 and again.json() == body


async def test_transcripts_are_invisible_to_other_tenants(stt: Stt) -> None:
    created = (await stt.sync()).json()
    _, other = await stt.api.make_key("stt", tenant="globex")
    for path in ("", "/srt", "/vtt", "/sentences", "/paragraphs"):
        response = await stt.api.client.get(f"/v1/transcriptions/{created['id']}{path}", headers=bearer(other))
        assert_error(response, 404, "not_found")
    for bad in ("tr_123", "dz_01JDX8Q6ZK3M4N5P6Q7R8S9T0V", "tr_01JDX8Q6ZK3M4N5P6Q7R8S9T0V"):
        assert_error(await stt.api.client.get(f"/v1/transcriptions/{bad}", headers=stt.auth), 404, "not_found")


async def test_exports_render_the_stored_words(stt: Stt) -> None:
    tid = (await stt.sync(speaker_labels="true")).json()["id"]
    srt = await stt.api.client.get(f"/v1/transcriptions/{tid}/srt?chars_per_caption=20", headers=stt.auth)
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("text/plain")
    assert srt.text.startswith("1\n00:00:00,000 --> ") and "[A] Lexia fake" in srt.text
    assert all(len(line.split("] ", 1)[-1]) <= 20 for line in srt.text.splitlines()[2::4])
    plain = await stt.api.client.get(f"/v1/transcriptions/{tid}/srt?speaker_labels=false", headers=stt.auth)
    assert "[A]" not in plain.text
    vtt = await stt.api.client.get(f"/v1/transcriptions/{tid}/vtt", headers=stt.auth)
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert "<v A>" in vtt.text and "<v B>" in vtt.text
    sentences = (await stt.api.client.get(f"/v1/transcriptions/{tid}/sentences", headers=stt.auth)).json()
    assert set(sentences) == {"id", "confidence", "audio_duration", "sentences"} and sentences["audio_duration"] == 7.0
    assert all(set(s) == {"text", "start", "end", "confidence", "speaker", "words"} for s in sentences["sentences"])
    paragraphs = (await stt.api.client.get(f"/v1/transcriptions/{tid}/paragraphs", headers=stt.auth)).json()
    words = [w for p in paragraphs["paragraphs"] for w in p["words"]]
    assert len(words) == 14 and paragraphs["paragraphs"][0]["speaker"] == "A"
    for bad in ("9", "501", "x"):
        response = await stt.api.client.get(f"/v1/transcriptions/{tid}/srt?chars_per_caption={bad}", headers=stt.auth)
        assert_error(response, 422, "validation_error", "chars_per_caption")


async def test_punctuate_and_format_text_false_strip_and_lowercase(stt: Stt) -> None:
    body = (await stt.sync(punctuate="false", format_text="0")).json()
    assert body["punctuate"] is False and body["format_text"] is False
    assert body["text"] == body["text"].lower() and "." not in body["text"]
    assert all(w["text"] == w["text"].lower() and "." not in w["text"] for w in body["words"])


async def test_language_options(stt: Stt) -> None:
    body = (await stt.sync(language_code="fr_FR")).json()
    assert body["language_code"] == "fr" and body["language_detection"] is False
    assert body["language_confidence"] == 1.0
    assert_error(await stt.sync(language_code="xx"), 422, "unsupported_language", "language_code")
    assert_error(await stt.sync(language_code="fr", language_detection="true"), 422, "validation_error",
                 "language_detection")


async def test_speaker_labels_fill_speakers_and_utterances(stt: Stt) -> None:
    body = (await stt.sync(speakers_expected="3")).json()
    assert body["speaker_labels"] is True and body["speakers_expected"] == 3
    speakers = [w["speaker"] for w in body["words"]]
    assert speakers[0] == "A" and set(speakers) == {"A", "B", "C"}
    assert [w for u in body["utterances"] for w in u["words"]] == body["words"]
    for first, second in zip(body["utterances"], body["utterances"][1:]):
        assert first["speaker"] != second["speaker"]
    nested = (await stt.api.client.post(
        "/v1/transcriptions/sync",
        json={"audio_url": "http://127.0.0.1:1/x.wav", "speaker_options": {"min_speakers_expected": 3,
                                                                           "max_speakers_expected": 2}},
        headers=stt.auth,
    ))
    assert_error(nested, 422, "validation_error", "speaker_options.min_speakers_expected")


async def test_speaker_labels_need_a_diarizer(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(LEXIA_DIARIZATION_ENABLED="false")
    _, key = await api.make_key("stt")
    sample = wav(tmp_path / "a.wav", 2.0)
    files = {"file": ("a.wav", sample.read_bytes(), "audio/wav")}
    response = await api.client.post(
        "/v1/transcriptions/sync", files=files, data={"speaker_labels": "true"}, headers=bearer(key)
    )
    error = assert_error(response, 503, "engine_unavailable")
    assert "diarization" in error["message"] and response.headers["retry-after"]
    assert api.leftovers() == []


async def test_stt_disabled_answers_503(serve_app: AppFactory) -> None:
    api = await serve_app(LEXIA_STT_ENABLED="false")
    _, key = await api.make_key("stt")
    response = await api.client.post("/v1/transcriptions/sync", json={"audio_url": "http://x"}, headers=bearer(key))
    assert_error(response, 503, "engine_unavailable")


@pytest.mark.parametrize(
    ("data", "status", "code", "param"),
    [
        ({"colour": "blue"}, 422, "unknown_parameter", "colour"),
        ({"webhook_url": "https://hooks.example.com"}, 422, "validation_error", "webhook_url"),
        ({"speech_model": "nope"}, 404, "model_not_found", "speech_model"),
        ({"punctuate": "maybe"}, 422, "validation_error", "punctuate"),
        ({"speakers_expected": "99"}, 422, "validation_error", "speakers_expected"),
        ({"metadata": "not json"}, 422, "validation_error", "metadata"),
        ({"metadata": '{"k": 1}'}, 422, "validation_error", "metadata"),
        ({"keyterms_prompt": ["x" * 600, "y" * 600]}, 422, "validation_error", "keyterms_prompt"),
        ({"prompt": "p" * 1001}, 422, "validation_error", "prompt"),
        ({"audio_url": "http://127.0.0.1/a.wav"}, 422, "validation_error", "file"),
    ],
)
async def test_bad_multipart_fields_are_refused(stt: Stt, data: dict, status: int, code: str, param: str) -> None:
    assert_error(await stt.sync(**data), status, code, param)


async def test_json_body_rules(stt: Stt) -> None:
    client = stt.api.client
    empty = await client.post("/v1/transcriptions/sync", json={}, headers=stt.auth)
    assert_error(empty, 422, "validation_error", "file")
    assert_error(
        await client.post("/v1/transcriptions/sync", json={"audio_url": "x", "foo": 1}, headers=stt.auth),
        422, "unknown_parameter", "foo",
    )
    assert_error(
        await client.post("/v1/transcriptions/sync", json={"audio_url": "ftp://a/b"}, headers=stt.auth),
        422, "invalid_url", "audio_url",
    )
    assert_error(
        await client.post("/v1/transcriptions/sync", content=b"{", headers={**stt.auth, "Content-Type": JSON}),
        400, "invalid_json",
    )
    assert_error(
        await client.post("/v1/transcriptions/sync", content=b"x", headers={**stt.auth, "Content-Type": "text/plain"}),
        415, "unsupported_content_type",
    )
    assert_error(
        await client.post(
            "/v1/transcriptions/sync", content=b"--x\r\n", headers={**stt.auth, "Content-Type": "multipart/form-data"}
        ),
        400, "malformed_request",
    )


async def test_audio_alias_field_is_accepted(stt: Stt) -> None:
    response = await stt.api.client.post(
        "/v1/transcriptions/sync", files={"audio": ("a.wav", stt.sample.read_bytes(), "audio/wav")}, headers=stt.auth
    )
    assert response.status_code == 200 and response.json()["audio_filename"] == "a.wav"
    two = await stt.api.client.post(
        "/v1/transcriptions/sync",
        files=[("file", ("a.wav", b"1", "audio/wav")), ("audio", ("b.wav", b"2", "audio/wav"))],
        headers=stt.auth,
    )
    assert_error(two, 422, "validation_error", "file")


async def test_usage_is_metered_and_audio_seconds_charged(stt: Stt) -> None:
    first = await stt.sync()
    remaining_after_first = int(first.headers["x-ratelimit-remaining-audio"])
    second = await stt.sync()
    assert int(second.headers["x-ratelimit-remaining-audio"]) <= remaining_after_first - 7
    await stt.api.services.usage.flush()
    usage = (await stt.api.client.get("/v1/usage?kind=stt", headers=stt.auth)).json()
    assert usage["totals"]["stt"]["requests"] == 2 and usage["totals"]["stt"]["audio_seconds"] == 14.0
    metrics = (await stt.api.client.get("/metrics")).text
    assert 'lexia_audio_seconds_total{kind="stt"} 14.0' in metrics


async def test_audio_limit_refuses_once_spent(stt: Stt) -> None:
    _, secret = await stt.api.make_key("stt", name="small", limits={"audio_seconds_per_hour": 10})
    headers = bearer(secret)
    files = {"file": ("a.wav", stt.sample.read_bytes(), "audio/wav")}
    ok = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-audio"] == "10"
    await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)  # goes negative
    refused = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)
    assert_error(refused, 429, "audio_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1


class SlowSTT(FakeSTT):
    """FakeSTT that takes its time per segment."""

    def __init__(self, delay: float) -> None:
        super().__init__(segment_delay=delay)


class BrokenSTT(FakeSTT):
    """An engine that fails mid-way."""

    async def transcribe(self, audio: Audio, options: STTOptions, progress: Any = None,
                         on_segment: Any = None) -> Transcript:
        if progress is not None:
            progress(0.5)
        raise RuntimeError("CUDA out of memory")


async def test_concurrency_slots_are_held_and_released(stt: Stt) -> None:
    stt.api.services.engines.stt = SlowSTT(0.3)
    _, secret = await stt.api.make_key("stt", name="one", limits={"max_concurrent_jobs": 1})
    files = {"file": ("a.wav", stt.sample.read_bytes(), "audio/wav")}
    first = asyncio.create_task(stt.api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(secret)))
    await asyncio.sleep(0.15)
    refused = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(secret))
    assert_error(refused, 429, "concurrency_limit_exceeded")
    assert refused.headers["retry-after"] == "10" and refused.headers["x-ratelimit-remaining-jobs"] == "0"
    assert (await first).status_code == 200
    after = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(secret))
    assert after.status_code == 200 and after.headers["x-ratelimit-remaining-jobs"] == "0"


async def test_engine_failure_is_500_and_stored_as_error(stt: Stt) -> None:
    stt.api.services.engines.stt = BrokenSTT()
    response = await stt.sync()
    error = assert_error(response, 500, "transcription_failed")
    assert "CUDA" not in error["message"]
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        (job_id,) = conn.execute("SELECT id FROM jobs").fetchone()
    body = (await stt.api.client.get(f"/v1/transcriptions/{job_id}", headers=stt.auth)).json()
    assert body["status"] == "error" and body["error_code"] == "transcription_failed" and body["text"] is None
    assert_error(await stt.api.client.get(f"/v1/transcriptions/{job_id}/srt", headers=stt.auth), 409, "not_ready")
    await stt.api.services.usage.flush()
    usage = (await stt.api.client.get("/v1/usage?kind=stt", headers=stt.auth)).json()
    assert usage["totals"]["stt"]["audio_seconds"] == 3.5  # the half processed before the failure


async def test_sync_timeout_answers_504_and_the_job_completes(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(LEXIA_SYNC_TIMEOUT_SECONDS="0.2")
    api.services.engines.stt = SlowSTT(0.25)
    _, key = await api.make_key("stt", limits={"max_concurrent_jobs": 1})
    sample = wav(tmp_path / "a.wav", 7.0)
    files = {"file": ("a.wav", sample.read_bytes(), "audio/wav")}
    response = await api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(key))
    assert_error(response, 504, "processing_timeout")
    location = response.headers["location"]
    assert location.startswith("/v1/transcriptions/tr_")
    pending = await api.client.get(location, headers=bearer(key))
    assert pending.json()["status"] == "processing" and pending.json()["text"] is None
    assert_error(await api.client.get(location + "/srt", headers=bearer(key)), 409, "not_ready")
    busy = await api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(key))
    assert_error(busy, 429, "concurrency_limit_exceeded")  # the running job still holds the slot
    for _ in range(50):
        await asyncio.sleep(0.05)
        done = (await api.client.get(location, headers=bearer(key))).json()
        if done["status"] == "completed":
            break
    assert done["status"] == "completed" and done["words"]
    await asyncio.sleep(0.05)
    api.services.engines.stt = FakeSTT()
    assert (await api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(key))).status_code == 200


async def test_cancelled_sync_job_answers_200_cancelled(stt: Stt) -> None:
    stt.api.services.engines.stt = SlowSTT(2.0)
    request = asyncio.create_task(stt.sync())
    jobs = stt.api.services.sync_jobs
    running: list[str] = []
    for _ in range(500):  # up to 10 s: a cold first upload and decode can take a while on 2 cores
        await asyncio.sleep(0.02)
        running = list(jobs._runs)
        if running:
            break
    assert running, "the sync job never started"
    assert jobs.cancel(running[0])
    response = await request
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert db_row(running[0])[0] == "cancelled"


async def test_audio_is_retained_only_when_asked(stt: Stt) -> None:
    body = (await stt.sync(audio_retention_hours="2", result_retention_days="0")).json()
    assert body["audio_retention_hours"] == 2 and body["expires_at"] is None
    kept = Path(db_row(body["id"])[5])
    assert kept.parent == stt.api.storage / "acme"
    assert await asyncio.to_thread(kept.read_bytes) == await asyncio.to_thread(stt.sample.read_bytes)
    await asyncio.to_thread(kept.unlink)  # the retention sweeper's job (issue 5); keeps the storage check honest


async def test_size_and_duration_limits(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(LEXIA_MAX_UPLOAD_BYTES="100000", LEXIA_SYNC_MAX_AUDIO_SECONDS="5")
    _, key = await api.make_key("stt")
    big = wav(tmp_path / "big.wav", 4.0)  # 128 kB
    files = {"file": ("big.wav", big.read_bytes(), "audio/wav")}
    response = await api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(key))
    error = assert_error(response, 413, "file_too_large", "file")
    assert "100000" in error["message"]
    small_rate = wav(tmp_path / "long.wav", 6.0, rate=8000, subtype="PCM_U8")  # 48 kB but 6 s
    files = {"file": ("long.wav", small_rate.read_bytes(), "audio/wav")}
    response = await api.client.post("/v1/transcriptions/sync", files=files, headers=bearer(key))
    error = assert_error(response, 413, "audio_too_long", "file")
    assert "5 s" in error["message"]
    assert api.leftovers() == []
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


async def test_shutdown_stops_running_sync_jobs_and_records_them(stt: Stt) -> None:
    stt.api.services.engines.stt = SlowSTT(0.3)
    request = asyncio.create_task(stt.sync())
    jobs = stt.api.services.sync_jobs
    for _ in range(100):
        await asyncio.sleep(0.02)
        if jobs._runs:
            break
    (job_id,) = list(jobs._runs)
    await jobs.aclose()  # what the app's lifespan does on shutdown
    response = await request
    assert_error(response, 503, "dependency_unavailable")
    status, _, _, code, _, _ = db_row(job_id)
    assert (status, code) == ("error", "internal_error")


class BrokenDiarizer(FakeDiarizer):
    """A diarizer that always fails."""

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> list[SpeakerTurn]:
        raise RuntimeError("no speakers today")


class GappySTT(FakeSTT):
    """FakeSTT whose second word came without a usable timing (as the engine repairs it)."""

    async def transcribe(self, audio: Audio, options: STTOptions, progress: Any = None,
                         on_segment: Any = None) -> Transcript:
        result = await super().transcribe(audio, options, progress, on_segment)
        first = result.segments[0]
        words = list(first.words)
        words[1] = replace(words[1], interpolated=True)
        return replace(result, segments=(replace(first, words=tuple(words)), *result.segments[1:]))


async def test_a_failed_diarization_still_completes_with_a_warning(stt: Stt) -> None:
    stt.api.services.engines.diarizer = BrokenDiarizer()
    body = (await stt.sync(speaker_labels="true")).json()
    assert body["status"] == "completed" and body["utterances"] is None and body["words"]
    assert all(w["speaker"] is None for w in body["words"])
    assert [w["code"] for w in body["warnings"]] == ["diarization_failed"]


async def test_interpolated_word_timings_are_flagged_in_warnings(stt: Stt) -> None:
    stt.api.services.engines.stt = GappySTT()
    body = (await stt.sync()).json()
    assert body["status"] == "completed" and len(body["words"]) == 14
    assert body["warnings"] == [{"code": "interpolated_word_timings",
                                 "message": "1 word(s) had no timing from the engine; their times are interpolated"}]


def tenant_jobs(tenant: str = "acme") -> int:
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE tenant_id = %s", (tenant,)).fetchone()
    return int(row[0]) if row else 0


async def test_idempotency_key_replays_the_sync_transcript(stt: Stt, tmp_path: Path) -> None:
    headers = {**stt.auth, "Idempotency-Key": "sync-1"}
    files = {"file": ("call.wav", stt.sample.read_bytes(), "audio/wav")}
    first = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)
    assert first.status_code == 200 and "idempotency-replayed" not in first.headers
    count = tenant_jobs()
    assert count >= 1
    again = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)
    assert again.status_code == 200 and again.headers["idempotency-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "completed"
    assert again.headers["location"] == f"/v1/transcriptions/{first.json()['id']}"
    assert tenant_jobs() == count  # no new transcript, no new work
    # The same key with other bytes or other fields is refused.
    other = {"file": ("call.wav", wav(tmp_path / "other.wav", 3.0).read_bytes(), "audio/wav")}
    assert_error(
        await stt.api.client.post("/v1/transcriptions/sync", files=other, headers=headers), 409, "idempotency_key_reused"
    )
    changed = await stt.api.client.post(
        "/v1/transcriptions/sync", files=files, data={"punctuate": "false"}, headers=headers
    )
    assert_error(changed, 409, "idempotency_key_reused")
    assert tenant_jobs() == count


async def test_a_failed_sync_request_does_not_consume_its_idempotency_key(stt: Stt) -> None:
    headers = {**stt.auth, "Idempotency-Key": "sync-2"}
    files = {"file": ("call.wav", stt.sample.read_bytes(), "audio/wav")}
    bad = await stt.api.client.post(
        "/v1/transcriptions/sync", files=files, data={"speech_model": "nope"}, headers=headers
    )
    assert bad.status_code in (400, 404, 422)
    good = await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=headers)
    assert good.status_code == 200 and "idempotency-replayed" not in good.headers
    malformed = {**stt.auth, "Idempotency-Key": "x" * 256}
    assert_error(await stt.api.client.post("/v1/transcriptions/sync", files=files, headers=malformed), 400,
                 "malformed_request")
