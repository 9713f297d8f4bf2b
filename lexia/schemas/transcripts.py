"""Lexia-native transcription request bodies (§4.3): unknown fields are rejected."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]


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
    audio_retention_hours: Annotated[int, Meta(ge=0, le=8760)] | None = None
    result_retention_days: Annotated[int, Meta(ge=0, le=3650)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)] | None = None


TRANSCRIPT_LIST_FIELDS = frozenset({"keyterms_prompt", "word_boost"})
TRANSCRIPT_OBJECT_FIELDS = frozenset({"metadata", "speaker_options"})
