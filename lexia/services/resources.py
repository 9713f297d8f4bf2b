"""Resource objects of jobs as the API shows them: queue position, tombstones, list summaries."""

from __future__ import annotations

from typing import Any

from lexia.services.diarization import SUMMARY_FIELDS as DIARIZATION_SUMMARY
from lexia.services.diarization import diarization_object
from lexia.services.transcripts import transcript_object

TRANSCRIPT_SUMMARY = (
    "id", "object", "status", "audio_url", "audio_filename", "audio_duration", "language_code", "speaker_labels",
    "error", "created_at", "completed_at", "deleted_at",
)
# Erased by DELETE and by retention expiry (§4.4); the tombstone keeps ids, status, timings,
# audio_duration, language_code and the option flags.
TRANSCRIPT_ERASED = ("text", "words", "utterances", "confidence", "language_confidence", "prompt", "keyterms_prompt",
                     "audio_url", "audio_filename", "metadata")


def transcript_view(row: Any, queue_position: int | None = None) -> dict[str, Any]:
    """The §4.2 transcript object, with its queue position while queued and nulls once erased."""
    body = transcript_object(row)
    body["queue_position"] = queue_position if row.status == "queued" else None
    if row.deleted_at is not None:
        for name in TRANSCRIPT_ERASED:
            body[name] = None
    return body


def resource_view(row: Any, queue_position: int | None = None) -> dict[str, Any]:
    """The transcript or diarization object of a job row."""
    if row.kind == "diarization":
        return diarization_object(row, queue_position)
    return transcript_view(row, queue_position)


def summary_view(row: Any) -> dict[str, Any]:
    """The list summary of a transcript or diarization."""
    full = resource_view(row)
    fields = DIARIZATION_SUMMARY if row.kind == "diarization" else TRANSCRIPT_SUMMARY
    return {name: full[name] for name in fields}
