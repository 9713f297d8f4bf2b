"""Lexia-native diarization request body (§5): unknown fields are rejected."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from lexia.schemas.transcripts import MetadataKey, MetadataValue


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
    audio_retention_hours: Annotated[int, Meta(ge=0, le=8760)] | None = None
    result_retention_days: Annotated[int, Meta(ge=0, le=3650)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)] | None = None


DIARIZATION_LIST_FIELDS: frozenset[str] = frozenset()
DIARIZATION_OBJECT_FIELDS = frozenset({"metadata"})
