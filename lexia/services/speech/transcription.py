"""Transcription rules: options (§4.3), running STT and diarization, the §4.2 result content.

Everything here speaks Python: the sync routes, the OpenAI audio routes and the job worker all
call `transcribe_audio` with decoded Audio and validated TranscriptionOptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import msgspec

from lexia.engines.base import (
    Audio,
    DiarizeOptions,
    Diarizer,
    Engines,
    Segment,
    SpeakerTurn,
    STTEngine,
    STTOptions,
    Transcript,
)
from lexia.errors import EngineUnavailable, ModelNotFound, UnsupportedLanguage, ValidationFailed
from lexia.schemas.transcripts import SpeakerOptions, TranscriptRequest
from lexia.services.speech.speakers import assign_speakers, mean_confidence, utterances
from lexia.settings import EngineSettings

log = logging.getLogger("lexia.transcription")

DEFAULT_MODEL_ALIASES = ("best", "universal", "nano")
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 1000
MAX_PROMPT_CHARS = 1000
# Kept inside a word when punctuate=false: apostrophes and hyphens are spelling, not punctuation.
_INNER_KEEP = frozenset("'’-")


class StoredOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Validated options kept in a job's `options` column (JSON) and read back by the worker."""

    speakers_expected: int | None = None
    min_speakers_expected: int | None = None
    max_speakers_expected: int | None = None

    def diarize_options(self) -> DiarizeOptions:
        """Speaker-count hints for the diarizer."""
        return DiarizeOptions(
            num_speakers=self.speakers_expected,
            min_speakers=self.min_speakers_expected,
            max_speakers=self.max_speakers_expected,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Inverse of to_json (unknown keys ignored)."""
        return msgspec.convert(data, cls)


class TranscriptionOptions(StoredOptions, frozen=True, kw_only=True):
    """Validated options of one transcription (stored in the job's `options`)."""

    speech_model: str
    language_code: str | None = None  # None = detect
    language_detection: bool = True
    punctuate: bool = True
    format_text: bool = True
    keyterms_prompt: tuple[str, ...] = ()
    prompt: str | None = None
    speaker_labels: bool = False
    task: Literal["transcribe", "translate"] = "transcribe"
    temperature: float = 0.0

    def stt_options(self) -> STTOptions:
        """The engine's options."""
        return STTOptions(
            language=self.language_code,
            task=self.task,
            prompt=self.prompt,
            hotwords=self.keyterms_prompt,
            temperature=self.temperature,
            word_timestamps=True,
        )



@dataclass(slots=True)
class TranscriptResult:
    """A finished transcription in Lexia's shape (ms word times) plus the engine's segments."""

    transcript: Transcript
    words: list[dict[str, Any]]
    word_segments: list[int]
    text: str
    confidence: float | None
    language_code: str
    language_confidence: float
    duration: float
    utterances: list[dict[str, Any]] | None = None
    diarized: bool = False
    warnings: list[dict[str, str]] = field(default_factory=list)

    def result_json(self) -> dict[str, Any]:
        """What is stored in the job's `result`."""
        return {
            "text": self.text,
            "words": self.words,
            "utterances": self.utterances,
            "confidence": self.confidence,
            "language_code": self.language_code,
            "language_confidence": self.language_confidence,
        }

    def segments_json(self) -> list[dict[str, Any]]:
        """Engine segments with ms times and the speaker of most of their words."""
        talk: list[dict[str | None, int]] = [{} for _ in self.transcript.segments]
        for word, index in zip(self.words, self.word_segments, strict=True):
            votes = talk[index]
            votes[word.get("speaker")] = votes.get(word.get("speaker"), 0) + word["end"] - word["start"] + 1
        out = []
        for segment, votes in zip(self.transcript.segments, talk, strict=True):
            speaker = max(votes, key=lambda s: votes[s]) if votes else None
            out.append(
                {
                    "id": segment.id,
                    "seek": segment.seek,
                    "start": round(segment.start * 1000),
                    "end": round(segment.end * 1000),
                    "text": segment.text,
                    "tokens": list(segment.tokens),
                    "temperature": segment.temperature,
                    "avg_logprob": segment.avg_logprob,
                    "compression_ratio": segment.compression_ratio,
                    "no_speech_prob": segment.no_speech_prob,
                    "speaker": speaker,
                }
            )
        return out


def require_stt(engines: Engines) -> STTEngine:
    """The STT engine, or 503 engine_unavailable."""
    if engines.stt is None or "stt" in engines.disabled:
        raise EngineUnavailable("Speech-to-text is disabled or not loaded on this server")
    return engines.stt


def require_diarizer(engines: Engines, *, param: str = "speaker_labels") -> Diarizer:
    """The diarizer, or 503 engine_unavailable (speaker labels need it)."""
    if engines.diarizer is None or "diarization" in engines.disabled:
        raise EngineUnavailable(
            f"{param} needs speaker diarization, which is disabled or not loaded on this server"
        )
    return engines.diarizer


def resolve_model(engines: Engines, name: str | None, *, param: str) -> str:
    """The canonical STT model id for a requested id or alias (None = the default)."""
    stt = require_stt(engines)
    default = stt.info().id
    if name is None or name in DEFAULT_MODEL_ALIASES:
        return default
    info = engines.find_model(name, kind="stt")
    if info is None:
        raise ModelNotFound(name, param=param)
    return info.id


def normalise_language(code: str, *, param: str, supported: Mapping[str, str]) -> str | None:
    """`en_us` → `en`, `auto` → None (detect); 422 unsupported_language when unknown."""
    value = code.strip().lower().replace("-", "_")
    if value == "auto":
        return None
    base = value.split("_", 1)[0]
    if base not in supported:
        raise UnsupportedLanguage(f"{param} {code!r} is not supported by the speech model", param=param)
    return base


def resolve_language(
    stt: STTEngine,
    *,
    language_code: str | None,
    language_detection: bool | None,
    default: str,
    param: str = "language_code",
) -> tuple[str | None, bool]:
    """(language or None for detection, language_detection flag) per §4.3."""
    supported = stt.languages()
    if language_code is not None:
        language = normalise_language(language_code, param=param, supported=supported)
    else:
        language = None
        if language_detection is not True and default.strip().lower() != "auto":
            language = normalise_language(default, param=param, supported=supported)
    if language is not None and language_detection is True:
        raise ValidationFailed(
            "language_detection cannot be true together with a language_code", param="language_detection"
        )
    if language is None and language_detection is False:
        raise ValidationFailed("language_detection is false but no language_code was given", param=param)
    return language, language is None


def check_speakers(
    *,
    speakers_expected: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    max_allowed: int,
    prefix: str = "",
) -> None:
    """Ranges and combinations of the speaker-count hints (422 with the offending param)."""
    for name, value in (
        ("speakers_expected", speakers_expected),
        (f"{prefix}min_speakers_expected", min_speakers),
        (f"{prefix}max_speakers_expected", max_speakers),
    ):
        if value is not None and not 1 <= value <= max_allowed:
            raise ValidationFailed(f"{name} must be between 1 and {max_allowed}", param=name)
    if speakers_expected is not None and (min_speakers is not None or max_speakers is not None):
        raise ValidationFailed(
            "speakers_expected cannot be combined with min/max_speakers_expected", param="speakers_expected"
        )
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ValidationFailed(
            "min_speakers_expected must not exceed max_speakers_expected",
            param=f"{prefix}min_speakers_expected",
        )


def check_text_options(keyterms: tuple[str, ...], prompt: str | None, *, keyterms_param: str) -> None:
    """Keyterm and prompt sizes of §4.3."""
    if len(keyterms) > MAX_KEYTERMS:
        raise ValidationFailed(f"{keyterms_param} takes at most {MAX_KEYTERMS} items", param=keyterms_param)
    if sum(len(k) for k in keyterms) > MAX_KEYTERM_CHARS:
        raise ValidationFailed(
            f"{keyterms_param} may hold at most {MAX_KEYTERM_CHARS} characters in all", param=keyterms_param
        )
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationFailed(f"prompt may hold at most {MAX_PROMPT_CHARS} characters", param="prompt")


def strip_punctuation(text: str) -> str:
    """Remove punctuation, keeping apostrophes and hyphens between letters."""
    out = []
    for i, char in enumerate(text):
        if unicodedata.category(char).startswith("P"):
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            if not (inner and char in _INNER_KEEP):
                continue
        out.append(char)
    return "".join(out)


def build_words(
    transcript: Transcript, *, punctuate: bool, format_text: bool
) -> tuple[list[dict[str, Any]], list[int], int]:
    """§4.2 word objects (ms), the segment index of each, and the count of interpolated timings."""
    words: list[dict[str, Any]] = []
    origin: list[int] = []
    interpolated = 0
    for index, segment in enumerate(transcript.segments):
        for word in segment.words:
            text = word.text.strip()
            if not punctuate:
                text = strip_punctuation(text)
            if not format_text:
                text = text.lower()
            if not text:
                continue  # a bare punctuation mark with punctuate=false
            start = round(word.start * 1000)
            words.append(
                {
                    "text": text,
                    "start": start,
                    "end": max(start, round(word.end * 1000)),
                    "confidence": round(word.probability, 3),
                    "speaker": None,
                }
            )
            origin.append(index)
            interpolated += word.interpolated
    return words, origin, interpolated


async def _diarize(diarizer: Diarizer, audio: Audio, options: DiarizeOptions) -> list[SpeakerTurn] | Exception:
    try:
        return (await diarizer.diarize(audio, options)).turns
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any diarizer failure becomes a warning, never a failed transcript
        log.warning("diarization failed: %s", exc)
        return exc


async def transcribe_audio(
    engines: Engines,
    audio: Audio,
    options: TranscriptionOptions,
    *,
    progress: Callable[[float], None] | None = None,
    on_segment: Callable[[Segment], None] | None = None,
) -> TranscriptResult:
    """Run STT (and diarization alongside it when speaker labels are wanted) and build the result."""
    stt = require_stt(engines)
    diarizer = require_diarizer(engines) if options.speaker_labels else None
    turns_task = (
        asyncio.ensure_future(_diarize(diarizer, audio, options.diarize_options())) if diarizer else None
    )
    try:
        transcript = await stt.transcribe(audio, options.stt_options(), progress, on_segment)
        turns = await turns_task if turns_task is not None else None
    finally:
        if turns_task is not None and not turns_task.done():
            turns_task.cancel()
            with contextlib.suppress(BaseException):
                await turns_task
    words, origin, interpolated = build_words(
        transcript, punctuate=options.punctuate, format_text=options.format_text
    )
    if options.punctuate and options.format_text:
        text = " ".join(transcript.text.split())
    else:
        text = " ".join(w["text"] for w in words)
    result = TranscriptResult(
        transcript=transcript,
        words=words,
        word_segments=origin,
        text=text,
        confidence=mean_confidence(words),
        language_code=transcript.language,
        language_confidence=round(transcript.language_probability, 4),
        duration=audio.duration,
    )
    if interpolated:
        result.warnings.append(
            {
                "code": "interpolated_word_timings",
                "message": f"{interpolated} word(s) had no timing from the engine; their times are interpolated",
            }
        )
    if isinstance(turns, Exception):
        result.warnings.append(
            {"code": "diarization_failed", "message": "Speaker diarization failed; words have no speakers"}
        )
    elif turns is not None:
        assign_speakers(words, turns)
        result.utterances = utterances(words)
        result.diarized = True
    return result


def options_from_request(
    request: TranscriptRequest, engines: Engines, settings: EngineSettings, *, sync: bool
) -> TranscriptionOptions:
    """Validate a §4.3 request into options (404 model_not_found, 422 with the offending param)."""
    if sync:
        for name in ("webhook_url", "webhook_auth_header_name", "webhook_auth_header_value"):
            if getattr(request, name) is not None:
                raise ValidationFailed(
                    f"{name} is not allowed on sync routes (use POST /v1/transcriptions)", param=name
                )
    if (request.webhook_auth_header_name is None) != (request.webhook_auth_header_value is None):
        raise ValidationFailed(
            "webhook_auth_header_name and webhook_auth_header_value go together", param="webhook_auth_header_name"
        )
    stt = require_stt(engines)
    model = resolve_model(engines, request.speech_model, param="speech_model")
    language, detection = resolve_language(
        stt,
        language_code=request.language_code,
        language_detection=request.language_detection,
        default=settings.stt.default_language,
    )
    if request.keyterms_prompt is not None and request.word_boost is not None:
        raise ValidationFailed("Send keyterms_prompt or its alias word_boost, not both", param="word_boost")
    keyterms_param = "word_boost" if request.word_boost is not None else "keyterms_prompt"
    keyterms = tuple(request.keyterms_prompt or request.word_boost or ())
    check_text_options(keyterms, request.prompt, keyterms_param=keyterms_param)
    nested = request.speaker_options or SpeakerOptions()
    min_speakers, max_speakers = request.min_speakers_expected, request.max_speakers_expected
    prefix = ""
    if request.speaker_options is not None:
        if min_speakers is not None or max_speakers is not None:
            raise ValidationFailed(
                "Use speaker_options or the flat min/max_speakers_expected, not both", param="speaker_options"
            )
        min_speakers, max_speakers = nested.min_speakers_expected, nested.max_speakers_expected
        prefix = "speaker_options."
    check_speakers(
        speakers_expected=request.speakers_expected,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        max_allowed=settings.diarization.max_speakers,
        prefix=prefix,
    )
    hinted = any(v is not None for v in (request.speakers_expected, min_speakers, max_speakers))
    return TranscriptionOptions(
        speech_model=model,
        language_code=language,
        language_detection=detection,
        punctuate=request.punctuate,
        format_text=request.format_text,
        keyterms_prompt=keyterms,
        prompt=request.prompt,
        speaker_labels=bool(request.speaker_labels) or hinted,
        speakers_expected=request.speakers_expected,
        min_speakers_expected=min_speakers,
        max_speakers_expected=max_speakers,
    )


def transcription_options(
    request: TranscriptRequest, engines: Engines, settings: EngineSettings, *, sync: bool
) -> dict[str, Any]:
    """A transcript request's stored options (speaker labels need a diarizer: 503 without one)."""
    options = options_from_request(request, engines, settings, sync=sync)
    if options.speaker_labels:
        require_diarizer(engines)
    return options.to_json()
