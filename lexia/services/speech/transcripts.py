"""Transcript resources as the API shows them (§4.2, §4.5): the object, list summaries and exports.

A transcript is a job row of kind `transcription`; its content (`result`) is null until the job
completes, and is erased by DELETE and by retention (the tombstone keeps ids, status, timings,
duration, language and option flags).
"""

from __future__ import annotations

from typing import Any

import msgspec

from lexia.db.rows import JobRow
from lexia.errors import Conflict, Gone
from lexia.schemas.common import iso
from lexia.schemas.transcripts import (
    Paragraphs,
    Sentences,
    SpeakerBounds,
    TextBlock,
    Transcript,
    TranscriptSummary,
    TranscriptWord,
    Utterance,
    Warning,
)
from lexia.services.speech import formats

# Erased by DELETE and by retention expiry (§4.4).
ERASED = frozenset({"text", "words", "utterances", "confidence", "language_confidence", "prompt",
                    "keyterms_prompt", "audio_url", "audio_filename", "metadata"})
WORD_FIELDS = ("text", "start", "end", "confidence", "speaker")


def stored_words(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The result's words as dicts in §4.2 field order (jsonb does not keep key order)."""
    return [{name: w.get(name) for name in WORD_FIELDS} for w in (result or {}).get("words") or []]


def _words(raw: list[dict[str, Any]] | None) -> list[TranscriptWord]:
    return msgspec.convert(raw or [], list[TranscriptWord])


def _utterances(result: dict[str, Any]) -> list[Utterance] | None:
    raw = result.get("utterances")
    return None if raw is None else msgspec.convert(raw, list[Utterance])


def resource_fields(row: JobRow, *, done: bool, queue_position: int | None) -> dict[str, Any]:
    """The fields transcripts and diarizations share (§4.2, §5), from `progress` to `deleted_at`."""
    failed = row.status == "error"
    return {
        "progress": round(float(row.progress), 4),
        "queue_position": queue_position if row.status == "queued" else None,
        "error": row.error_message if failed else None,
        "error_code": row.error_code if failed else None,
        "webhook_url": row.webhook_url,
        "webhook_auth": row.webhook_auth_header_name is not None,
        "webhook_auth_header_name": row.webhook_auth_header_name,
        "webhook_status_code": row.webhook_status_code,
        "audio_retention_hours": row.audio_retention_hours,
        "result_retention_days": row.result_retention_days,
        "metadata": row.metadata,
        "created_at": iso(row.created_at) or "",
        "completed_at": iso(row.finished_at) if done else None,
        "expires_at": iso(row.expires_at),
        "deleted_at": iso(row.deleted_at),
    }


def transcript_view(row: JobRow, queue_position: int | None = None) -> Transcript:
    """The §4.2 transcript object: content null until `completed`, nulls once erased."""
    options = row.options or {}
    done = row.status == "completed"
    result: dict[str, Any] = (row.result or {}) if done else {}
    erased = row.deleted_at is not None
    fields: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "audio_url": row.audio_url,
        "audio_filename": row.audio_filename,
        "audio_duration": round(row.audio_duration, 3) if done and row.audio_duration is not None else None,
        "speech_model": options.get("speech_model"),
        "language_code": result.get("language_code") if done else options.get("language_code"),
        "language_detection": options.get("language_detection"),
        "language_confidence": result.get("language_confidence"),
        "punctuate": options.get("punctuate"),
        "format_text": options.get("format_text"),
        "keyterms_prompt": options.get("keyterms_prompt"),
        "prompt": options.get("prompt"),
        "speaker_labels": options.get("speaker_labels"),
        "speakers_expected": options.get("speakers_expected"),
        "speaker_options": SpeakerBounds(
            min_speakers_expected=options.get("min_speakers_expected"),
            max_speakers_expected=options.get("max_speakers_expected"),
        ),
        "text": result.get("text"),
        "confidence": result.get("confidence"),
        "words": _words(result.get("words")) if done and not erased else None,
        "utterances": _utterances(result) if done and not erased else None,
        "warnings": msgspec.convert(row.warnings or [], list[Warning]),
        **resource_fields(row, done=done, queue_position=queue_position),
    }
    if erased:
        fields.update(dict.fromkeys(ERASED & fields.keys()))
    return Transcript(**fields)


def transcript_summary(row: JobRow) -> TranscriptSummary:
    """A transcript in a list."""
    full = transcript_view(row)
    return TranscriptSummary(
        id=full.id, status=full.status, audio_url=full.audio_url, audio_filename=full.audio_filename,
        audio_duration=full.audio_duration, language_code=full.language_code, speaker_labels=full.speaker_labels,
        error=full.error, created_at=full.created_at, completed_at=full.completed_at, deleted_at=full.deleted_at,
    )


def completed(row: JobRow) -> JobRow:
    """The row of a transcript whose content can be exported: 410 once deleted, 409 before completion."""
    if row.deleted_at is not None:
        raise Gone(f"Transcript {row.id} was deleted")
    if row.status != "completed":
        raise Conflict(f"Transcript {row.id} is {row.status}, not completed", code="not_ready")
    return row


def _head(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "confidence": (row.result or {}).get("confidence"),
        "audio_duration": round(row.audio_duration, 3) if row.audio_duration is not None else None,
    }


def sentences_view(row: JobRow) -> Sentences:
    """Words grouped into sentences (§4.5)."""
    blocks = formats.sentences(stored_words(completed(row).result))
    return Sentences(**_head(row), sentences=msgspec.convert(blocks, list[TextBlock]))


def paragraphs_view(row: JobRow) -> Paragraphs:
    """Sentences grouped into paragraphs (§4.5)."""
    blocks = formats.paragraphs(stored_words(completed(row).result))
    return Paragraphs(**_head(row), paragraphs=msgspec.convert(blocks, list[TextBlock]))


def captions(row: JobRow, chars_per_caption: int, speaker_labels: bool | None) -> list[formats.Cue]:
    """Caption cues of a completed transcript (speaker prefixes by default when it has speakers)."""
    words = stored_words(completed(row).result)
    with_speakers = any(w.get("speaker") for w in words) if speaker_labels is None else speaker_labels
    return formats.captions(words, chars_per_caption, with_speakers)
