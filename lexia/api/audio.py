"""OpenAI audio routes (scope stt): POST /v1/audio/transcriptions and /v1/audio/translations.

Stateless: no resource or job is created and the upload is deleted when the request ends; the
audio seconds are still metered and charged, and the call holds one of the key's concurrency
slots until its response (or stream) ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.response import Stream

from lexia.api.deps import caller, caller_limits, services
from lexia.api.security import route_opt
from lexia.api.sources import convert, hold_slot, read_audio_body, release_slot
from lexia.api.transcriptions import meter
from lexia.audio import decode
from lexia.engines.base import Audio, Segment
from lexia.errors import LexiaError, ProcessingTimeout, TranscriptionFailed, ValidationFailed
from lexia.ids import new_id
from lexia.intake import Spool
from lexia.schemas.audio import AUDIO_LIST_FIELDS, TranscriptionForm, TranslationForm
from lexia.services import formats
from lexia.services.transcription import (
    TranscriptionOptions,
    TranscriptResult,
    check_speakers,
    check_text_options,
    normalise_language,
    require_diarizer,
    require_stt,
    resolve_model,
    transcribe_audio,
)
from lexia.services.transcripts import JobProgress

log = logging.getLogger("lexia.api.audio")

Req = Request[Any, Any, Any]
STREAM_FORMATS = ("json", "text", "diarized_json")
KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post("/v1/audio/transcriptions", opt=route_opt("stt", "audio"), status_code=200)
async def create_transcription(request: Req) -> Response[Any]:
    """OpenAI-compatible transcription of an uploaded file."""
    return await _audio_route(request, task="transcribe")


@post("/v1/audio/translations", opt=route_opt("stt", "audio"), status_code=200)
async def create_translation(request: Req) -> Response[Any]:
    """OpenAI-compatible translation to English of an uploaded file."""
    return await _audio_route(request, task="translate")


def _options(request: Req, form: TranscriptionForm | TranslationForm, task: str) -> TranscriptionOptions:
    """Validate the form into options (404 model_not_found, 422, 503 without a diarizer)."""
    svc = services(request)
    stt = require_stt(svc.engines)
    model = resolve_model(svc.engines, form.model, param="model")
    check_text_options((), form.prompt, keyterms_param="prompt")
    if not isinstance(form, TranscriptionForm):
        return TranscriptionOptions(
            speech_model=model, task="translate", prompt=form.prompt, temperature=form.temperature
        )
    language = (
        normalise_language(form.language, param="language", supported=stt.languages()) if form.language else None
    )
    if form.stream and form.response_format not in STREAM_FORMATS:
        raise ValidationFailed(
            f"stream=true works with response_format {', '.join(STREAM_FORMATS)}", param="stream"
        )
    check_speakers(
        speakers_expected=form.speakers_expected,
        min_speakers=form.min_speakers_expected,
        max_speakers=form.max_speakers_expected,
        max_allowed=svc.settings.engines.diarization.max_speakers,
    )
    hinted = any(
        v is not None for v in (form.speakers_expected, form.min_speakers_expected, form.max_speakers_expected)
    )
    speakers = bool(form.speaker_labels) or hinted or form.response_format == "diarized_json"
    if speakers:
        require_diarizer(
            svc.engines, param="response_format" if form.response_format == "diarized_json" else "speaker_labels"
        )
    return TranscriptionOptions(
        speech_model=model,
        language_code=language,
        language_detection=language is None,
        prompt=form.prompt,
        speaker_labels=speakers,
        speakers_expected=form.speakers_expected,
        min_speakers_expected=form.min_speakers_expected,
        max_speakers_expected=form.max_speakers_expected,
        task="transcribe" if task == "transcribe" else "translate",
        temperature=form.temperature,
    )


def _log_ignored(data: dict[str, Any], kind: type[msgspec.Struct]) -> None:
    ignored = sorted(set(data) - set(kind.__struct_fields__) - {"file", "audio"})
    if ignored:
        log.info("ignoring unknown audio fields: %s", ", ".join(ignored))


async def _audio_route(request: Req, *, task: str) -> Response[Any]:
    svc = services(request)
    settings = svc.settings
    require_stt(svc.engines)
    holder = new_id("job")
    await hold_slot(request, holder, settings.audio.sync_timeout_seconds + 60)
    streaming = False
    try:
        async with Spool(settings.audio.storage_dir) as spool:
            body = await read_audio_body(request, spool, allow_json=False, list_fields=AUDIO_LIST_FIELDS)
            kind: type[TranscriptionForm] | type[TranslationForm] = (
                TranscriptionForm if task == "transcribe" else TranslationForm
            )
            _log_ignored(body.data, kind)
            form = convert(body.data, kind, lax=True)
            options = _options(request, form, task)
            if body.audio is None:
                raise ValidationFailed("file is required (multipart field `file`)", param="file")
            audio = await decode(body.audio.path, max_seconds=settings.audio.sync_max_audio_seconds)
        me = caller(request)
        await svc.limiter.debit(me.id, "audio", audio.duration, caller_limits(request)["audio_seconds_per_hour"])
        if isinstance(form, TranscriptionForm) and form.stream:
            streaming = True
            return Stream(
                _events(request, audio, options, form, holder),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        progress = JobProgress(audio.duration)
        try:
            result = await asyncio.wait_for(
                _transcribe(request, audio, options, progress), settings.audio.sync_timeout_seconds
            )
        except TimeoutError:
            meter(request, progress.processed_seconds, diarized=options.speaker_labels)
            raise ProcessingTimeout(
                f"The transcription did not finish within {settings.audio.sync_timeout_seconds:g} s"
            ) from None
        except BaseException:
            meter(request, progress.processed_seconds, diarized=options.speaker_labels)
            raise
        meter(request, audio.duration, diarized=result.diarized)
        return render(result, form, task, require_stt(svc.engines).languages())
    finally:
        if not streaming:
            await release_slot(request, holder)


async def _transcribe(
    request: Req,
    audio: Audio,
    options: TranscriptionOptions,
    progress: JobProgress,
    on_segment: Any = None,
) -> TranscriptResult:
    try:
        return await transcribe_audio(
            services(request).engines, audio, options, progress=progress.update, on_segment=on_segment
        )
    except LexiaError:
        raise
    except Exception as exc:
        log.exception("transcription failed")
        raise TranscriptionFailed("Transcription failed in the speech engine") from exc


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def _events(
    request: Req, audio: Audio, options: TranscriptionOptions, form: TranscriptionForm, holder: str
) -> AsyncIterator[bytes]:
    """SSE: one delta per decoded segment, segments for diarized_json, done, [DONE]; errors as a frame."""
    progress = JobProgress(audio.duration)
    queue: asyncio.Queue[Segment | None] = asyncio.Queue()
    work = asyncio.ensure_future(_transcribe(request, audio, options, progress, on_segment=queue.put_nowait))
    work.add_done_callback(lambda _: queue.put_nowait(None))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services(request).settings.audio.sync_timeout_seconds
    finished = False
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProcessingTimeout("The transcription did not finish within the sync time limit")
            try:
                item = await asyncio.wait_for(queue.get(), min(KEEPALIVE_SECONDS, remaining))
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:
                break
            yield _sse({"type": "transcript.text.delta", "delta": item.text})
        result = work.result()
        if form.response_format == "diarized_json":
            for segment in diarized_segments(result):
                yield _sse(segment)
        usage = formats.usage_seconds(audio.duration)
        yield _sse({"type": "transcript.text.done", "text": result.text, "usage": usage})
        finished = True
        meter(request, audio.duration, diarized=result.diarized)
    except LexiaError as exc:
        yield _sse(exc.body())
    except Exception:
        log.exception("transcription stream failed")
        yield _sse(TranscriptionFailed("Transcription failed in the speech engine").body())
    finally:
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        if not finished:
            meter(request, progress.processed_seconds, diarized=options.speaker_labels)
        await release_slot(request, holder)
    yield b"data: [DONE]\n\n"


# -- response shapes ---------------------------------------------------------------------------


def diarized_segments(result: TranscriptResult) -> list[dict[str, Any]]:
    """One `transcript.text.segment` per utterance (§4.2 rules), times in seconds."""
    return [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{i}",
            "start": formats.seconds(u["start"]),
            "end": formats.seconds(u["end"]),
            "speaker": u["speaker"],
            "text": u["text"],
        }
        for i, u in enumerate(result.utterances or [])
    ]


def _verbose(
    result: TranscriptResult, form: TranscriptionForm | TranslationForm, task: str, names: Mapping[str, str]
) -> dict[str, Any]:
    language_name = names.get(result.language_code, result.language_code)
    granularities = set(getattr(form, "timestamp_granularities", None) or ["segment"])
    speakers = bool(getattr(form, "speaker_labels", False)) and result.diarized
    body: dict[str, Any] = {
        "task": task,
        "language": "english" if task == "translate" else language_name,
        "duration": round(result.duration, 3),
        "text": result.text,
    }
    if "segment" in granularities:
        segments = []
        for s in result.segments_json():
            item = {
                "id": s["id"],
                "seek": s["seek"],
                "start": formats.seconds(s["start"]),
                "end": formats.seconds(s["end"]),
                "text": s["text"],
                "tokens": s["tokens"],
                "temperature": s["temperature"],
                "avg_logprob": s["avg_logprob"],
                "compression_ratio": s["compression_ratio"],
                "no_speech_prob": s["no_speech_prob"],
            }
            if speakers:
                item["speaker"] = s["speaker"]
            segments.append(item)
        body["segments"] = segments
    if "word" in granularities:
        words = []
        for w in result.words:
            item = {"word": w["text"], "start": formats.seconds(w["start"]), "end": formats.seconds(w["end"])}
            if speakers:
                item["speaker"] = w["speaker"]
            words.append(item)
        body["words"] = words
    body["usage"] = formats.usage_seconds(result.duration)
    return body


def render(
    result: TranscriptResult, form: TranscriptionForm | TranslationForm, task: str, names: Mapping[str, str]
) -> Response[Any]:
    """The §4.6 response for the requested response_format."""
    fmt = form.response_format
    usage = formats.usage_seconds(result.duration)
    if fmt == "text":
        return Response(result.text, media_type="text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        speakers = bool(getattr(form, "speaker_labels", False)) and result.diarized
        cues = formats.segment_cues(result.segments_json(), speakers)
        if fmt == "srt":
            return Response(formats.srt(cues), media_type="text/plain; charset=utf-8")
        return Response(formats.vtt(cues), media_type="text/vtt; charset=utf-8")
    if fmt == "verbose_json":
        return Response(_verbose(result, form, task, names))
    if fmt == "diarized_json":
        return Response(
            {
                "task": "transcribe",
                "duration": round(result.duration, 3),
                "text": result.text,
                "segments": diarized_segments(result),
                "usage": usage,
            }
        )
    return Response({"text": result.text, "usage": usage})
