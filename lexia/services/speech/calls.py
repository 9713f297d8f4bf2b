"""The stateless OpenAI audio calls (API.md §4.6): no resource or job, the upload gone when the call ends.

A call holds one of the key's concurrency slots from admission until its response (or stream)
ends, receives the multipart upload into its own spool, validates the form into transcription
options, decodes within the sync limit, debits the audio seconds and transcribes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from lexia.engines.base import Audio, Engines, Segment
from lexia.errors import LexiaError, TranscriptionFailed, ValidationFailed
from lexia.ids import new_id
from lexia.intake import FormData
from lexia.schemas.audio import TranscriptionForm, TranslationForm
from lexia.services.access.keys import ApiKey
from lexia.services.access.limits import RedisLimiter
from lexia.services.drain import Drain
from lexia.services.speech.intake import AudioIntake
from lexia.services.speech.transcription import (
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
from lexia.settings import Settings

log = logging.getLogger("lexia.audio")

STREAM_FORMATS = ("json", "text", "diarized_json")
SLOT_MARGIN = 60.0


class AudioCalls:
    """Runs /v1/audio/transcriptions and /v1/audio/translations calls."""

    def __init__(
        self, engines: Engines, intake: AudioIntake, limiter: RedisLimiter, settings: Settings, drain: Drain
    ) -> None:
        self.engines = engines
        self.drain = drain
        self.intake = intake
        self.limiter = limiter
        self.settings = settings

    def open(self, key: ApiKey, limits: dict[str, int]) -> AudioCall:
        """One call (use as `async with`, or close it with `aclose` when its stream ends)."""
        require_stt(self.engines)
        return AudioCall(self, key, limits)

    def options(self, form: TranscriptionForm | TranslationForm) -> TranscriptionOptions:
        """Validate a form into options (404 model_not_found, 422, 503 without a diarizer)."""
        stt = require_stt(self.engines)
        model = resolve_model(self.engines, form.model, param="model")
        check_text_options((), form.prompt, keyterms_param="prompt")
        if not isinstance(form, TranscriptionForm):
            return TranscriptionOptions(
                speech_model=model, task="translate", prompt=form.prompt, temperature=form.temperature
            )
        language = (
            normalise_language(form.language, param="language", supported=stt.languages()) if form.language else None
        )
        if form.stream and form.response_format not in STREAM_FORMATS:
            formats = ", ".join(STREAM_FORMATS)
            raise ValidationFailed(f"stream=true works with response_format {formats}", param="stream")
        check_speakers(
            speakers_expected=form.speakers_expected,
            min_speakers=form.min_speakers_expected,
            max_speakers=form.max_speakers_expected,
            max_allowed=self.settings.engines.diarization.max_speakers,
        )
        hints = (form.speakers_expected, form.min_speakers_expected, form.max_speakers_expected)
        hinted = any(v is not None for v in hints)
        speakers = bool(form.speaker_labels) or hinted or form.response_format == "diarized_json"
        if speakers:
            param = "response_format" if form.response_format == "diarized_json" else "speaker_labels"
            require_diarizer(self.engines, param=param)
        return TranscriptionOptions(
            speech_model=model,
            language_code=language,
            language_detection=language is None,
            prompt=form.prompt,
            speaker_labels=speakers,
            speakers_expected=form.speakers_expected,
            min_speakers_expected=form.min_speakers_expected,
            max_speakers_expected=form.max_speakers_expected,
            task="transcribe",
            temperature=form.temperature,
        )

    def language_name(self, code: str) -> str:
        """The English name of a language (verbose_json's `language`)."""
        return require_stt(self.engines).languages().get(code, code)

    async def transcribe(
        self,
        audio: Audio,
        options: TranscriptionOptions,
        *,
        progress: Callable[[float], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> TranscriptResult:
        """Transcribe (and diarize); an engine failure is 500 transcription_failed."""
        try:
            return await transcribe_audio(self.engines, audio, options, progress=progress, on_segment=on_segment)
        except LexiaError:
            raise
        except Exception as exc:
            log.exception("transcription failed")
            raise TranscriptionFailed("Transcription failed in the speech engine") from exc


class AudioCall:
    """One call's concurrency slot and spool."""

    def __init__(self, calls: AudioCalls, key: ApiKey, limits: dict[str, int]) -> None:
        self.calls = calls
        self.key = key
        self.limits = limits
        self.holder = new_id("job")
        self.slots_held: int | None = None
        self.spool = calls.intake.spool()

    async def __aenter__(self) -> AudioCall:
        lease = self.calls.settings.audio.sync_timeout_seconds + SLOT_MARGIN
        self.slots_held = await self.calls.limiter.acquire_slot(
            self.key.id, self.holder, self.limits["max_concurrent_jobs"], lease
        )
        await self.spool.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Remove the upload and give the slot back (idempotent)."""
        await self.spool.__aexit__(None, None, None)
        if self.slots_held is not None:
            self.slots_held = None
            await self.calls.limiter.release_slot(self.key.id, self.holder)

    async def receive(self, chunks: AsyncIterator[bytes], *, content_type: str, content_length: int | None) -> FormData:
        """The multipart form, the audio streamed to this call's spool."""
        return await self.calls.intake.receive(
            self.spool, chunks, content_type=content_type, content_length=content_length
        )

    async def decode(self, form: FormData) -> Audio:
        """The uploaded audio decoded within the sync limit, and its seconds debited."""
        if form.audio is None:
            raise ValidationFailed("file is required (multipart field `file`)", param="file")
        audio = await self.calls.intake.decode(
            form.audio.path, max_seconds=self.calls.settings.audio.sync_max_audio_seconds, param="file"
        )
        await self.calls.limiter.debit(self.key.id, "audio", audio.duration, self.limits["audio_seconds_per_hour"])
        return audio
