"""OpenAI audio routes (API.md §4.6, scope stt): POST /v1/audio/transcriptions and /v1/audio/translations.

Stateless: no resource or job is created and the upload is deleted when the call ends; the audio
seconds are metered and charged, and the call holds one of the key's concurrency slots until its
response (or stream) ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec

from lexia.api.body import FormShape, body_chunks, convert, form_values, media_type, upload_operation
from lexia.api.deps import current_services, jobs_headers, note_usage
from lexia.api.errors import documented
from lexia.api.observe import record_request
from lexia.api.security import secured
from lexia.api.sse import EventStream
from lexia.engines.base import Audio, Segment
from lexia.errors import LexiaError, ProcessingTimeout, TranscriptionFailed, UnsupportedMediaType
from lexia.schemas.audio import (
    AUDIO_LIST_FIELDS,
    DiarizedSegment,
    DiarizedTranscription,
    DurationUsage,
    TranscriptionForm,
    TranscriptionText,
    TranslationForm,
    VerboseSegment,
    VerboseTranscription,
    VerboseWord,
)
from lexia.services.access.keys import ApiKey
from lexia.services.speech import formats
from lexia.services.speech.calls import AudioCall, AudioCalls
from lexia.services.speech.transcription import TranscriptionOptions, TranscriptResult

log = logging.getLogger("lexia.api.audio")

Req = Request[Any, Any, Any]
KEEPALIVE_SECONDS = 15.0
FORM = FormShape(lists=AUDIO_LIST_FIELDS)
AUDIO_ERRORS = documented(400, 404, 413, 415, 422, 504)
AUDIO_OK = ResponseSpec(
    TranscriptionText, generate_examples=False, description="The transcript in the requested response_format"
)


class Progress:
    """The highest engine progress seen (0..1) over the call's audio."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.value = 0.0

    def update(self, value: float) -> None:
        """Keep the highest value seen."""
        self.value = max(self.value, min(1.0, value))

    @property
    def processed_seconds(self) -> float:
        """Audio seconds processed so far."""
        return round(self.value * self.duration, 3)


def meter(request: Req, seconds: float, *, diarized: bool) -> None:
    """Record processed audio seconds on the request's usage event and in the metrics."""
    metrics = current_services().metrics
    note_usage(request, kind="stt", audio_seconds=seconds, diarization_seconds=seconds if diarized else 0.0)
    metrics.audio_seconds.labels("stt").inc(seconds)
    if diarized:
        metrics.audio_seconds.labels("diarization").inc(seconds)


class AudioController(Controller):
    """/v1/audio."""

    path = "/v1/audio"
    opt = secured("stt", "audio")
    request_max_body_size = None  # streamed to disk under LEXIA_MAX_UPLOAD_BYTES

    @post(
        "/transcriptions", status_code=200, operation_class=upload_operation(TranscriptionForm, json_alternative=False),
        responses={200: AUDIO_OK, **AUDIO_ERRORS},
    )
    async def transcriptions(
        self, request: Req, audio_calls: AudioCalls, caller: ApiKey, limits: dict[str, int]
    ) -> Response[Any]:
        """OpenAI-compatible transcription of an uploaded file (json, text, srt, vtt, verbose_json,
        diarized_json; SSE with `stream=true`)."""
        return await _call(request, audio_calls.open(caller, limits), TranscriptionForm, "transcribe")

    @post(
        "/translations", status_code=200, operation_class=upload_operation(TranslationForm, json_alternative=False),
        responses={200: AUDIO_OK, **AUDIO_ERRORS},
    )
    async def translations(
        self, request: Req, audio_calls: AudioCalls, caller: ApiKey, limits: dict[str, int]
    ) -> Response[Any]:
        """OpenAI-compatible translation to English of an uploaded file."""
        return await _call(request, audio_calls.open(caller, limits), TranslationForm, "translate")


async def _call(
    request: Req, call: AudioCall, kind: type[TranscriptionForm] | type[TranslationForm], task: str
) -> Response[Any]:
    calls = call.calls
    streaming = False
    try:
        await call.__aenter__()
        jobs_headers(request, call.limits, call.slots_held)
        if media_type(request) != "multipart/form-data":
            raise UnsupportedMediaType("Content-Type must be multipart/form-data", code="unsupported_content_type")
        declared = request.headers.get("content-length")
        form_data = await call.receive(
            body_chunks(request), content_type=request.headers.get("content-type", ""),
            content_length=int(declared) if declared and declared.isdigit() else None,
        )
        # OpenAI's routes ignore fields they do not know (logged), repeated or not.
        known = {k: v for k, v in form_data.fields.items() if k.removesuffix("[]") in kind.__struct_fields__}
        _log_ignored(form_data.fields, kind)
        fields = form_values(known, list_fields=FORM.lists)
        form = convert(fields, kind, lax=True)
        options = calls.options(form)
        audio = await call.decode(form_data)
        if isinstance(form, TranscriptionForm) and form.stream:
            streaming = True
            events = _events(request, call, audio, options, form)
            return EventStream(events, on_close=lambda: record_request(request.scope))
        return await _answer(request, calls, audio, options, form=form, task=task)
    finally:
        if not streaming:
            await call.aclose()


def _log_ignored(data: dict[str, Any], kind: type[msgspec.Struct]) -> None:
    ignored = sorted({k.removesuffix("[]") for k in data} - set(kind.__struct_fields__) - {"file", "audio"})
    if ignored:
        log.info("ignoring unknown audio fields: %s", ", ".join(ignored))


async def _answer(
    request: Req, calls: AudioCalls, audio: Audio, options: TranscriptionOptions, *,
    form: TranscriptionForm | TranslationForm, task: str,
) -> Response[Any]:
    progress = Progress(audio.duration)
    timeout = calls.settings.audio.sync_timeout_seconds
    try:
        work = asyncio.wait_for(calls.transcribe(audio, options, progress=progress.update), timeout)
        result = await current_services().drain.run(work, "transcription")
    except TimeoutError:
        meter(request, progress.processed_seconds, diarized=options.speaker_labels)
        raise ProcessingTimeout(f"The transcription did not finish within {timeout:g} s") from None
    except BaseException:
        meter(request, progress.processed_seconds, diarized=options.speaker_labels)
        raise
    meter(request, audio.duration, diarized=result.diarized)
    return render(result, form, task, calls.language_name(result.language_code))


def _sse(payload: Any) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def _events(
    request: Req, call: AudioCall, audio: Audio, options: TranscriptionOptions, form: TranscriptionForm
) -> AsyncGenerator[bytes, None]:
    """SSE: one delta per decoded segment, segments for diarized_json, done, [DONE]; errors as a frame."""
    progress = Progress(audio.duration)
    queue: asyncio.Queue[Segment | None] = asyncio.Queue()
    work = asyncio.ensure_future(
        call.calls.transcribe(audio, options, progress=progress.update, on_segment=queue.put_nowait)
    )
    work.add_done_callback(lambda _: queue.put_nowait(None))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + call.calls.settings.audio.sync_timeout_seconds
    finished = False
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProcessingTimeout("The transcription did not finish within the sync time limit")
            try:
                next_item = asyncio.wait_for(queue.get(), min(KEEPALIVE_SECONDS, remaining))
                item = await call.calls.drain.run(next_item, "transcription")
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
        usage = DurationUsage(seconds=formats.usage_seconds(audio.duration)["seconds"])
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
        await call.aclose()
    yield b"data: [DONE]\n\n"


# -- response shapes ---------------------------------------------------------------------------


def diarized_segments(result: TranscriptResult) -> list[DiarizedSegment]:
    """One `transcript.text.segment` per utterance (§4.2 rules), times in seconds."""
    return [
        DiarizedSegment(
            id=f"seg_{i}", start=formats.seconds(u["start"]), end=formats.seconds(u["end"]), speaker=u["speaker"],
            text=u["text"],
        )
        for i, u in enumerate(result.utterances or [])
    ]


def _usage(duration: float) -> DurationUsage:
    return DurationUsage(seconds=formats.usage_seconds(duration)["seconds"])


def _verbose(
    result: TranscriptResult, form: TranscriptionForm | TranslationForm, task: str, language: str
) -> VerboseTranscription:
    granularities = set(getattr(form, "timestamp_granularities", None) or ["segment"])
    speakers = bool(getattr(form, "speaker_labels", False)) and result.diarized
    body = VerboseTranscription(
        task=task,
        language="english" if task == "translate" else language,
        duration=round(result.duration, 3),
        text=result.text,
        usage=_usage(result.duration),
    )
    if "segment" in granularities:
        body.segments = [
            VerboseSegment(
                id=s["id"], seek=s["seek"], start=formats.seconds(s["start"]), end=formats.seconds(s["end"]),
                text=s["text"], tokens=s["tokens"], temperature=s["temperature"], avg_logprob=s["avg_logprob"],
                compression_ratio=s["compression_ratio"], no_speech_prob=s["no_speech_prob"],
                **({"speaker": s["speaker"]} if speakers else {}),
            )
            for s in result.segments_json()
        ]
    if "word" in granularities:
        body.words = [
            VerboseWord(
                word=w["text"], start=formats.seconds(w["start"]), end=formats.seconds(w["end"]),
                **({"speaker": w["speaker"]} if speakers else {}),
            )
            for w in result.words
        ]
    return body


def render(
    result: TranscriptResult, form: TranscriptionForm | TranslationForm, task: str, language: str
) -> Response[Any]:
    """The §4.6 response for the requested response_format."""
    fmt = form.response_format
    if fmt == "text":
        return Response(result.text, media_type="text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        speakers = bool(getattr(form, "speaker_labels", False)) and result.diarized
        cues = formats.segment_cues(result.segments_json(), speakers)
        if fmt == "srt":
            return Response(formats.srt(cues), media_type="text/plain; charset=utf-8")
        return Response(formats.vtt(cues), media_type="text/vtt; charset=utf-8")
    if fmt == "verbose_json":
        return Response(_verbose(result, form, task, language))
    if fmt == "diarized_json":
        return Response(
            DiarizedTranscription(
                duration=round(result.duration, 3), text=result.text, segments=diarized_segments(result),
                usage=_usage(result.duration),
            )
        )
    return Response(TranscriptionText(text=result.text, usage=_usage(result.duration)))
