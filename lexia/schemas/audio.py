"""OpenAI audio request forms (/v1/audio/transcriptions, /v1/audio/translations); unknown fields ignored."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
Granularity = Literal["segment", "word"]


class TranscriptionForm(msgspec.Struct, kw_only=True):
    """Fields of POST /v1/audio/transcriptions (the file travels separately)."""

    model: str
    language: str | None = None
    prompt: Annotated[str, Meta(max_length=1000)] | None = None
    response_format: ResponseFormat = "json"
    temperature: Annotated[float, Meta(ge=0, le=1)] = 0.0
    timestamp_granularities: list[Granularity] | None = None
    stream: bool = False
    speaker_labels: bool | None = None
    speakers_expected: int | None = None
    min_speakers_expected: int | None = None
    max_speakers_expected: int | None = None
    chunking_strategy: str | None = None  # "auto" or a JSON object as text: accepted, ignored
    include: list[str] | None = None  # accepted, ignored
    known_speaker_names: list[str] | None = None  # accepted, ignored
    known_speaker_references: list[str] | None = None  # accepted, ignored


class TranslationForm(msgspec.Struct, kw_only=True):
    """Fields of POST /v1/audio/translations (output is always English)."""

    model: str
    prompt: Annotated[str, Meta(max_length=1000)] | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: Annotated[float, Meta(ge=0, le=1)] = 0.0


AUDIO_LIST_FIELDS = frozenset(
    {"timestamp_granularities", "include", "known_speaker_names", "known_speaker_references"}
)


# -- responses (API.md §4.6); times in seconds -------------------------------------------------


class DurationUsage(msgspec.Struct, kw_only=True):
    """`usage` of an audio call: the audio duration rounded up to whole seconds."""

    type: Literal["duration"] = "duration"
    seconds: int


class TranscriptionText(msgspec.Struct, kw_only=True):
    """response_format=json."""

    text: str
    usage: DurationUsage


class VerboseSegment(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A Whisper segment of verbose_json (`speaker` only with speaker_labels)."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    speaker: str | msgspec.UnsetType | None = msgspec.UNSET


class VerboseWord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A word of verbose_json (`speaker` only with speaker_labels)."""

    word: str
    start: float
    end: float
    speaker: str | msgspec.UnsetType | None = msgspec.UNSET


class VerboseTranscription(msgspec.Struct, kw_only=True, omit_defaults=True):
    """response_format=verbose_json (`segments` and `words` per timestamp_granularities)."""

    task: str
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment] | msgspec.UnsetType = msgspec.UNSET
    words: list[VerboseWord] | msgspec.UnsetType = msgspec.UNSET
    usage: DurationUsage


class DiarizedSegment(msgspec.Struct, kw_only=True):
    """One utterance of diarized_json."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    speaker: str | None
    text: str


class DiarizedTranscription(msgspec.Struct, kw_only=True):
    """response_format=diarized_json."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: DurationUsage
