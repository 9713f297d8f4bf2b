"""OpenAI audio request forms (/v1/audio/transcriptions, /v1/audio/translations); unknown fields ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
    chunking_strategy: Any = None  # accepted, ignored
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
