"""Diarization resources (§5): options, running the diarizer, the result, the object and RTTM."""

from __future__ import annotations

from typing import Any

import msgspec

from lexia.db.rows import JobRow
from lexia.engines.base import Audio, Diarized, Engines
from lexia.errors import Conflict, Gone, ValidationFailed
from lexia.schemas.diarization import (
    Diarization,
    DiarizationRequest,
    DiarizationSegment,
    DiarizationSummary,
    SpeakerTotal,
)
from lexia.services.speech.speakers import speaker_label
from lexia.services.speech.transcription import StoredOptions, check_speakers, require_diarizer
from lexia.services.speech.transcripts import resource_fields
from lexia.settings import EngineSettings

ALIASES = (
    ("speakers_expected", "num_speakers"),
    ("min_speakers_expected", "min_speakers"),
    ("max_speakers_expected", "max_speakers"),
)


class DiarizationOptions(StoredOptions, frozen=True, kw_only=True):
    """Validated options of one diarization (stored in the job's `options`)."""

    model: str


def options_from_request(
    request: DiarizationRequest, engines: Engines, settings: EngineSettings, *, sync: bool
) -> DiarizationOptions:
    """Validate a §5 request (aliases resolved; 422 with the offending param, 503 without a diarizer)."""
    diarizer = require_diarizer(engines, param="diarization")
    if sync:
        for name in ("webhook_url", "webhook_auth_header_name", "webhook_auth_header_value"):
            if getattr(request, name) is not None:
                raise ValidationFailed(f"{name} is not allowed on sync routes (use POST /v1/diarization)", param=name)
    values: dict[str, int | None] = {}
    for canonical, alias in ALIASES:
        given, aliased = getattr(request, canonical), getattr(request, alias)
        if given is not None and aliased is not None:
            raise ValidationFailed(f"Send {canonical} or its alias {alias}, not both", param=alias)
        values[canonical] = given if given is not None else aliased
    check_speakers(
        speakers_expected=values["speakers_expected"],
        min_speakers=values["min_speakers_expected"],
        max_speakers=values["max_speakers_expected"],
        max_allowed=settings.diarization.max_speakers,
    )
    return DiarizationOptions(model=diarizer.info().id, **values)


def diarization_options(
    request: DiarizationRequest, engines: Engines, settings: EngineSettings, *, sync: bool
) -> dict[str, Any]:
    """A diarization request's stored options."""
    return options_from_request(request, engines, settings, sync=sync).to_json()


def diarization_result(diarized: Diarized) -> dict[str, Any]:
    """Segments (ms, sorted by start, labelled A, B… by first appearance), per-speaker totals and the
    engine's confidence in the speaker count."""
    ordered = sorted(diarized.turns, key=lambda t: (t.start, t.end))
    labels: dict[str, str] = {}
    segments: list[dict[str, Any]] = []
    totals: dict[str, list[int]] = {}
    for turn in ordered:
        start, end = round(turn.start * 1000), round(turn.end * 1000)
        if end <= start:
            continue
        label = labels.setdefault(turn.speaker, speaker_label(len(labels)))
        segments.append({"speaker": label, "start": start, "end": end})
        total = totals.setdefault(label, [0, 0])
        total[0] += end - start
        total[1] += 1
    speakers = [{"speaker": s, "duration": d, "segment_count": n} for s, (d, n) in totals.items()]
    return {
        "segments": segments,
        "speakers": speakers,
        "speaker_count": len(speakers),
        "speaker_count_confidence": diarized.count_confidence,
    }


async def diarize_audio(engines: Engines, audio: Audio, options: DiarizationOptions) -> dict[str, Any]:
    """Run the diarizer and shape its turns."""
    diarizer = require_diarizer(engines, param="diarization")
    return diarization_result(await diarizer.diarize(audio, options.diarize_options()))


def diarization_view(row: JobRow, queue_position: int | None = None) -> Diarization:
    """The §5 diarization object; results are null until `completed`, erased in a tombstone."""
    options: dict[str, Any] = row.options or {}
    done = row.status == "completed"
    result: dict[str, Any] = (row.result or {}) if done else {}
    erased = row.deleted_at is not None
    return Diarization(
        id=row.id,
        status=row.status,
        audio_url=row.audio_url,
        audio_filename=row.audio_filename,
        audio_duration=round(row.audio_duration, 3) if done and row.audio_duration is not None else None,
        model=options.get("model"),
        speakers_expected=options.get("speakers_expected"),
        min_speakers_expected=options.get("min_speakers_expected"),
        max_speakers_expected=options.get("max_speakers_expected"),
        speaker_count=result.get("speaker_count"),
        speaker_count_confidence=result.get("speaker_count_confidence"),
        speakers=None if erased or not done else msgspec.convert(result.get("speakers") or [], list[SpeakerTotal]),
        segments=None
        if erased or not done
        else msgspec.convert(result.get("segments") or [], list[DiarizationSegment]),
        **resource_fields(row, done=done, queue_position=queue_position),
    )


def diarization_summary(row: JobRow) -> DiarizationSummary:
    """A diarization in a list."""
    full = diarization_view(row)
    return DiarizationSummary(
        id=full.id, status=full.status, audio_url=full.audio_url, audio_filename=full.audio_filename,
        audio_duration=full.audio_duration, speaker_count=full.speaker_count, error=full.error,
        created_at=full.created_at, completed_at=full.completed_at, deleted_at=full.deleted_at,
    )


def rttm(row: JobRow) -> str:
    """RTTM of a completed diarization: one SPEAKER line per segment, file id = its id, seconds (3 decimals).

    410 once deleted, 409 before completion.
    """
    if row.deleted_at is not None:
        raise Gone(f"Diarization {row.id} was deleted")
    if row.status != "completed":
        raise Conflict(f"Diarization {row.id} is {row.status}, not completed", code="not_ready")
    lines = [
        f"SPEAKER {row.id} 1 {s['start'] / 1000:.3f} {(s['end'] - s['start']) / 1000:.3f} <NA> <NA> {s['speaker']} "
        "<NA> <NA>"
        for s in (row.result or {}).get("segments") or []
    ]
    return "".join(line + "\n" for line in lines)
