"""Job kinds: one record per kind, looked up wherever behaviour depends on the kind.

A kind names its id prefix, resource path, actor and queue, the stage its engine work reports,
its failure code and usage kind, the work itself and the views of its resource. Adding a kind
is a module with its options, work and views, plus one line in KINDS; the worker declares one
actor per kind from this registry, and the job routes, sweeper, webhooks and metering read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from lexia.db.rows import JobRow
from lexia.engines.base import Audio, Engines
from lexia.ids import is_id
from lexia.services.speech.diarization import (
    DiarizationOptions,
    diarization_summary,
    diarization_view,
    diarize_audio,
)
from lexia.services.speech.transcription import TranscriptionOptions, transcribe_audio
from lexia.services.speech.transcripts import transcript_summary, transcript_view

STATUSES = ("queued", "processing", "completed", "error", "cancelled")
ACTIVE = ("queued", "processing")
TERMINAL = ("completed", "error", "cancelled")


class JobQueue(Protocol):
    """Where job and delivery ids are sent (Dramatiq in production, a list in tests)."""

    async def enqueue(self, actor: str, item_id: str, *, queue: str, delay: float | None = None) -> None:
        """Send `actor(item_id)` on `queue`, optionally after `delay` seconds."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """Finished work: the stored result, the audio it covered, warnings, whether it diarized."""

    result: dict[str, Any]
    duration: float
    warnings: list[dict[str, str]] = field(default_factory=list)
    diarized: bool = False


# The engine work of one job: (engines, decoded audio, stored options, progress 0..1) -> Outcome.
Work = Callable[[Engines, Audio, dict[str, Any], Callable[[float], None]], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class JobKind:
    """Everything that differs between job kinds."""

    name: str  # jobs.kind and the job object's `kind`
    prefix: str  # id prefix
    noun: str  # in messages, webhook event types (`<noun>.completed`) and `<noun>_id`
    path: str  # the resource collection: result_url and Location
    actor: str  # the Dramatiq actor that runs one attempt
    queue: str  # the Dramatiq queue of that actor
    stage: str  # the job's stage while its engine works
    failure_code: str  # error.code of an engine failure
    usage_kind: str  # the usage ledger kind of its audio seconds
    work: Work
    view: Callable[[JobRow, int | None], msgspec.Struct]  # the resource object
    summary: Callable[[JobRow], msgspec.Struct]  # the resource in a list


async def _transcribe(
    engines: Engines, audio: Audio, options: dict[str, Any], progress: Callable[[float], None]
) -> Outcome:
    done = await transcribe_audio(engines, audio, TranscriptionOptions.from_json(options), progress=progress)
    return Outcome(done.result_json(), done.duration, list(done.warnings), done.diarized)


async def _diarize(
    engines: Engines, audio: Audio, options: dict[str, Any], progress: Callable[[float], None]
) -> Outcome:
    result = await diarize_audio(engines, audio, DiarizationOptions.from_json(options))
    return Outcome(result, audio.duration, diarized=True)


TRANSCRIPTION = JobKind(
    name="transcription", prefix="tr", noun="transcript", path="/v1/transcriptions",
    actor="transcription.run", queue="transcription", stage="transcribing", failure_code="transcription_failed",
    usage_kind="stt", work=_transcribe, view=transcript_view, summary=transcript_summary,
)
DIARIZATION = JobKind(
    name="diarization", prefix="dz", noun="diarization", path="/v1/diarization",
    actor="diarization.run", queue="diarization", stage="diarizing", failure_code="diarization_failed",
    usage_kind="diarization", work=_diarize, view=diarization_view, summary=diarization_summary,
)
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (TRANSCRIPTION, DIARIZATION)}


def kind_of(job_id: str) -> JobKind | None:
    """The kind whose prefix the id carries (None for anything else)."""
    for kind in KINDS.values():
        if is_id(job_id, kind.prefix):
            return kind
    return None


def result_url(row: JobRow) -> str:
    """Path of a job's resource."""
    return f"{KINDS[row.kind].path}/{row.id}"
