"""Diarizations (API.md §5): the request (unknown fields rejected) and the object."""

from __future__ import annotations

from typing import Literal

import msgspec

from lexia.schemas.transcripts import Metadata, RetentionDays, RetentionHours


class DiarizationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/diarization and /v1/diarization/sync (JSON or multipart fields)."""

    audio_url: str | None = None
    speakers_expected: int | None = None
    min_speakers_expected: int | None = None
    max_speakers_expected: int | None = None
    num_speakers: int | None = None  # alias of speakers_expected
    min_speakers: int | None = None  # alias of min_speakers_expected
    max_speakers: int | None = None  # alias of max_speakers_expected
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None
    webhook_auth_header_value: str | None = None
    audio_retention_hours: RetentionHours | None = None
    result_retention_days: RetentionDays | None = None
    metadata: Metadata | None = None


DIARIZATION_LIST_FIELDS: frozenset[str] = frozenset()
DIARIZATION_OBJECT_FIELDS = frozenset({"metadata"})


class DiarizationSegment(msgspec.Struct, kw_only=True):
    """One speaker's turn, times in ms (segments may overlap)."""

    speaker: str
    start: int
    end: int


class SpeakerTotal(msgspec.Struct, kw_only=True):
    """Speech time (ms) and turn count of one speaker."""

    speaker: str
    duration: int
    segment_count: int


class Diarization(msgspec.Struct, kw_only=True):
    """The diarization object (§5); results are null until `completed` and once erased."""

    id: str
    object: Literal["diarization"] = "diarization"
    status: str
    audio_url: str | None
    audio_filename: str | None
    audio_duration: float | None
    model: str | None
    speakers_expected: int | None
    min_speakers_expected: int | None
    max_speakers_expected: int | None
    speaker_count: int | None
    # How sure the engine is of speaker_count, 0..1 (1.0 when speakers_expected fixed it; null
    # until completed, and from an engine that does not estimate it).
    speaker_count_confidence: float | None = None
    speakers: list[SpeakerTotal] | None
    segments: list[DiarizationSegment] | None
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


class DiarizationSummary(msgspec.Struct, kw_only=True):
    """A diarization in a list."""

    id: str
    object: Literal["diarization"] = "diarization"
    status: str
    audio_url: str | None
    audio_filename: str | None
    audio_duration: float | None
    speaker_count: int | None
    error: str | None
    created_at: str
    completed_at: str | None
    deleted_at: str | None
