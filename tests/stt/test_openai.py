"""/v1/audio/transcriptions and /v1/audio/translations through the official OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest

from lexia.db.migrations import libpq_dsn
from lexia.engines.base import Audio, STTOptions, Transcript
from lexia.engines.fakes import FakeSTT
from tests.conftest import TEST_DB_URL, bearer
from tests.harness import AppFactory, TestApp
from tests.stt.media import wav
from tests.test_auth import assert_error


@dataclass
class Oai:
    api: TestApp
    secret: str
    sample: Path

    @property
    def sdk(self) -> openai.AsyncOpenAI:
        return self.api.sdk(self.secret)


@pytest.fixture
async def oai(serve_app: AppFactory, tmp_path: Path) -> AsyncIterator[Oai]:
    api = await serve_app()
    _, secret = await api.make_key("stt,usage")
    yield Oai(api, secret, wav(tmp_path / "speech.wav", 7.0))
    assert api.leftovers() == []
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,), "the audio routes are stateless"


async def test_json_is_the_default(oai: Oai) -> None:
    result = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1")
    assert result.text.startswith("Lexia fake word") and result.text.endswith("audio.")
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 7


async def test_text_srt_and_vtt_are_plain_text(oai: Oai) -> None:
    text = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", response_format="text")
    assert isinstance(text, str) and text.startswith("Lexia fake word")
    srt = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:04,900\nLexia fake word speech test audio sample voice lexia")
    assert "2\n00:00:05,000 --> 00:00:06,900\nWord speech test audio.\n" in srt
    vtt = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.900\nLexia fake")


async def test_verbose_json_with_word_and_segment_granularities(oai: Oai) -> None:
    result = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"], language="fr",
    )
    assert result.language == "french" and result.duration == 7.0
    assert result.segments is not None and len(result.segments) == 2
    first = result.segments[0]
    assert (first.id, first.start, first.end) == (0, 0.0, 4.9) and first.text.startswith(" Lexia")
    assert result.words is not None and len(result.words) == 14
    assert (result.words[1].word, result.words[1].start, result.words[1].end) == ("fake", 0.5, 0.9)
    segment_only = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="verbose_json"
    )
    assert segment_only.segments and segment_only.words is None and segment_only.language == "english"
    words_only = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words_only.words and words_only.segments is None


async def test_speaker_labels_extend_verbose_json_srt_and_vtt(oai: Oai) -> None:
    result = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"], extra_body={"speaker_labels": "true"},
    )
    dumped = result.model_dump()
    assert [w["speaker"] for w in dumped["words"]][:6] == ["A", "A", "A", "A", "B", "B"]
    assert all("speaker" in s for s in dumped["segments"])
    srt = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="srt", extra_body={"speaker_labels": "true"}
    )
    assert "\n[A] Lexia fake" in srt


async def test_diarized_json_has_one_segment_per_utterance(oai: Oai) -> None:
    result = await oai.sdk.audio.transcriptions.create(
        file=oai.sample, model="whisper-1", response_format="diarized_json"
    )
    assert result.task == "transcribe" and result.duration == 7.0
    assert [s.speaker for s in result.segments] == ["A", "B", "A", "B"]
    assert [s.id for s in result.segments] == ["seg_0", "seg_1", "seg_2", "seg_3"]
    assert result.segments[0].type == "transcript.text.segment" and result.segments[1].start == 2.0
    assert " ".join(s.text for s in result.segments) == result.text


async def test_streaming_sends_deltas_then_done(oai: Oai) -> None:
    stream = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.delta", "transcript.text.done"]
    assert events[0].delta == " Lexia fake word speech test audio sample voice lexia fake."
    assert events[-1].text == "".join(e.delta for e in events[:-1]).strip()
    assert events[-1].usage is not None and events[-1].usage.seconds == 7


async def test_streaming_diarized_json_adds_segment_events(oai: Oai) -> None:
    response = await oai.api.client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", oai.sample.read_bytes(), "audio/wav")},
        data={"model": "whisper-1", "stream": "true", "response_format": "diarized_json"},
        headers=bearer(oai.secret),
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
    frames = [line.removeprefix("data: ") for line in response.text.split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    kinds = [json.loads(f)["type"] for f in frames[:-1]]
    assert kinds == ["transcript.text.delta"] * 2 + ["transcript.text.segment"] * 4 + ["transcript.text.done"]


class FailingSTT(FakeSTT):
    """Emits its first segment, then fails."""

    async def transcribe(self, audio: Audio, options: STTOptions, progress: Any = None,
                         on_segment: Any = None) -> Transcript:
        await super().transcribe(Audio(audio.samples[:16000 * 4]), options, progress, on_segment)
        raise RuntimeError("device lost")


async def test_a_failure_mid_stream_becomes_an_error_frame(oai: Oai) -> None:
    oai.api.services.engines.stt = FailingSTT()
    response = await oai.api.client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", oai.sample.read_bytes(), "audio/wav")},
        data={"model": "whisper-1", "stream": "true"},
        headers=bearer(oai.secret),
    )
    assert response.status_code == 200
    frames = [line.removeprefix("data: ") for line in response.text.split("\n") if line.startswith("data: ")]
    assert json.loads(frames[0])["type"] == "transcript.text.delta"
    assert json.loads(frames[1]) == {"error": {"message": "Transcription failed in the speech engine",
                                               "type": "server_error", "param": None, "code": "transcription_failed"}}
    assert frames[2:] == ["[DONE]"]
    with pytest.raises(openai.APIError):
        stream = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", stream=True)
        async for _ in stream:
            pass


async def test_translations(oai: Oai) -> None:
    result = await oai.sdk.audio.translations.create(file=oai.sample, model="whisper-1", response_format="verbose_json")
    assert result.language == "english" and result.duration == 7.0 and result.segments
    assert result.model_dump()["task"] == "translate"
    plain = await oai.sdk.audio.translations.create(file=oai.sample, model="whisper-1")
    assert plain.text.startswith("Lexia fake")
    text = await oai.sdk.audio.translations.create(file=oai.sample, model="whisper-1", response_format="text")
    assert isinstance(text, str) and text == plain.text


async def test_errors_arrive_as_sdk_exceptions(oai: Oai) -> None:
    sdk = oai.sdk
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.audio.transcriptions.create(file=oai.sample, model="whisper-9")
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.UnprocessableEntityError) as language:
        await sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", language="tlh")
    assert language.value.body["code"] == "unsupported_language"
    with pytest.raises(openai.UnprocessableEntityError) as stream_fmt:
        await sdk.audio.transcriptions.create(
            file=oai.sample, model="whisper-1", stream=True, response_format="srt"  # type: ignore[call-overload]
        )
    assert stream_fmt.value.body["param"] == "stream"
    with pytest.raises(openai.UnprocessableEntityError) as fmt:
        await sdk.audio.translations.create(
            file=oai.sample, model="whisper-1", response_format="diarized_json"  # type: ignore[arg-type]
        )
    assert fmt.value.body["param"] == "response_format"
    with pytest.raises(openai.UnprocessableEntityError) as temperature:
        await sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", temperature=1.5)
    assert temperature.value.body["param"] == "temperature"


async def test_route_rules_over_raw_http(oai: Oai) -> None:
    client, headers = oai.api.client, bearer(oai.secret)
    no_file = await client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": ("x", b"1")},
                                headers=headers)
    assert_error(no_file, 422, "validation_error", "file")
    no_model = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", oai.sample.read_bytes())},
                                 headers=headers)
    assert_error(no_model, 422, "validation_error", "model")
    as_json = await client.post("/v1/audio/transcriptions", json={"model": "whisper-1"}, headers=headers)
    assert_error(as_json, 415, "unsupported_content_type")
    ignored = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", oai.sample.read_bytes())},
        data={"model": "lexia-fake-stt", "chunking_strategy": "auto", "include[]": ["logprobs"], "made_up": "x"},
        headers=headers,
    )
    assert ignored.status_code == 200 and ignored.headers["x-ratelimit-limit-jobs"] == "16"
    _, stt_only = await oai.api.make_key("llm", name="llm-only")
    refused = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x")},
                                data={"model": "whisper-1"}, headers=bearer(stt_only))
    assert_error(refused, 403, "insufficient_scope")


async def test_usage_is_metered_without_storing_anything(oai: Oai) -> None:
    await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1")
    stream = await oai.sdk.audio.transcriptions.create(file=oai.sample, model="whisper-1", stream=True)
    async for _ in stream:
        pass
    await oai.sdk.audio.translations.create(file=oai.sample, model="whisper-1")
    await oai.api.services.usage.flush()
    usage = await oai.api.client.get("/v1/usage?kind=stt", headers=bearer(oai.secret))
    assert usage.json()["totals"]["stt"] == {"requests": 3, "input_tokens": 0, "output_tokens": 0,
                                             "audio_seconds": 21.0}


async def test_diarized_json_without_a_diarizer_is_503(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(LEXIA_DIARIZATION_ENABLED="false")
    _, secret = await api.make_key("stt")
    sample = wav(tmp_path / "a.wav", 2.0)
    with pytest.raises(openai.InternalServerError) as info:
        await api.sdk(secret).audio.transcriptions.create(
            file=sample, model="whisper-1", response_format="diarized_json"
        )
    assert info.value.status_code == 503 and info.value.body["code"] == "engine_unavailable"
    assert api.leftovers() == []


async def test_slow_transcription_times_out_with_504(serve_app: AppFactory, tmp_path: Path) -> None:
    api = await serve_app(LEXIA_SYNC_TIMEOUT_SECONDS="0.3")
    api.services.engines.stt = FakeSTT(segment_delay=0.5)
    _, secret = await api.make_key("stt,usage")
    response = await api.client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", wav(tmp_path / "a.wav", 7.0).read_bytes())},
        data={"model": "whisper-1"}, headers=bearer(secret),
    )
    assert_error(response, 504, "processing_timeout")
    assert "location" not in response.headers
    api.services.engines.stt = FakeSTT()
    again = await api.client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", wav(tmp_path / "a.wav", 1.0).read_bytes())},
        data={"model": "whisper-1"}, headers=bearer(secret),
    )
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining-jobs"] == "15"  # slot released
