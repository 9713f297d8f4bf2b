"""Lexia-native transcripts (API.md §4.2–§4.5): the request (unknown fields rejected) and the objects."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)]
RetentionHours = Annotated[int, Meta(ge=0, le=8760)]
RetentionDays = Annotated[int, Meta(ge=0, le=3650)]


class SpeakerOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Speaker-count bounds."""

    min_speakers_expected: int | None = None
    max_speakers_expected: int | None = None


class TranscriptRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/transcriptions and /v1/transcriptions/sync (JSON or multipart fields)."""

    audio_url: str | None = None
    speech_model: str | None = None
    language_code: str | None = None
    language_detection: bool | None = None
    punctuate: bool = True
    format_text: bool = True
    keyterms_prompt: list[str] | None = None
    word_boost: list[str] | None = None  # AssemblyAI alias of keyterms_prompt
    boost_param: str | None = None  # accepted and ignored
    prompt: str | None = None
    speaker_labels: bool | None = None
    speakers_expected: int | None = None
    speaker_options: SpeakerOptions | None = None
    min_speakers_expected: int | None = None
    max_speakers_expected: int | None = None
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None
    webhook_auth_header_value: str | None = None
    audio_retention_hours: RetentionHours | None = None
    result_retention_days: RetentionDays | None = None
    metadata: Metadata | None = None


TRANSCRIPT_LIST_FIELDS = frozenset({"keyterms_prompt", "word_boost"})
TRANSCRIPT_OBJECT_FIELDS = frozenset({"metadata", "speaker_options"})


class TranscriptWord(msgspec.Struct, kw_only=True):
    """A word: times in ms, Whisper's probability, the speaker (null without speaker labels)."""

    text: str
    start: int
    end: int
    confidence: float | None
    speaker: str | None = None


class Utterance(msgspec.Struct, kw_only=True):
    """A maximal run of consecutive words of one speaker."""

    speaker: str | None
    text: str | None
    start: int | None
    end: int | None
    confidence: float | None
    words: list[TranscriptWord]


class SpeakerBounds(msgspec.Struct, kw_only=True):
    """`speaker_options` as stored."""

    min_speakers_expected: int | None
    max_speakers_expected: int | None


class Warning(msgspec.Struct, kw_only=True):
    """Something that went wrong without failing the transcript (e.g. `diarization_failed`)."""

    code: str
    message: str


class Transcript(msgspec.Struct, kw_only=True):
    """The transcript object (§4.2); content fields are null until `completed` and once erased."""

    id: str
    object: Literal["transcript"] = "transcript"
    status: str
    audio_url: str | None
    audio_filename: str | None
    audio_duration: float | None
    speech_model: str | None
    language_code: str | None
    language_detection: bool | None
    language_confidence: float | None
    punctuate: bool | None
    format_text: bool | None
    keyterms_prompt: list[str] | None
    prompt: str | None
    speaker_labels: bool | None
    speakers_expected: int | None
    speaker_options: SpeakerBounds
    text: str | None
    confidence: float | None
    words: list[TranscriptWord] | None
    utterances: list[Utterance] | None
    warnings: list[Warning]
    progress: float
    queue_position: int | None
    error: str | None
    error_code: str | None
    webhook_url: str | None
    webhook_auth: bool
    webhook_auth_header_name: str | None
    webhook_status_code: int | None
    audio_retention_hours: int
    result_retention_days: int
    metadata: dict[str, str] | None
    created_at: str
    completed_at: str | None
    expires_at: str | None
    deleted_at: str | None


class TranscriptSummary(msgspec.Struct, kw_only=True):
    """A transcript in a list."""

    id: str
    object: Literal["transcript"] = "transcript"
    status: str
    audio_url: str | None
    audio_filename: str | None
    audio_duration: float | None
    language_code: str | None
    speaker_labels: bool | None
    error: str | None
    created_at: str
    completed_at: str | None
    deleted_at: str | None


class TextBlock(msgspec.Struct, kw_only=True):
    """A sentence or a paragraph (§4.5): its words, times in ms and speaker."""

    text: str
    start: int
    end: int
    confidence: float | None
    speaker: str | None
    words: list[TranscriptWord]


class Sentences(msgspec.Struct, kw_only=True):
    """GET /v1/transcriptions/{id}/sentences."""

    id: str
    confidence: float | None
    audio_duration: float | None
    sentences: list[TextBlock]


class Paragraphs(msgspec.Struct, kw_only=True):
    """GET /v1/transcriptions/{id}/paragraphs."""

    id: str
    confidence: float | None
    audio_duration: float | None
    paragraphs: list[TextBlock]
