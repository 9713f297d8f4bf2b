"""Transcript resources: job rows in `jobs` (kind 'transcription'), their lifecycle and §4.2 shape.

A row is written only once its audio is decoded (status `processing`), then moved to exactly one
terminal state: `completed` with its result, `error` with a code and message, or `cancelled`.
Every transition is guarded by the current status, so a late writer never overwrites a terminal
state. Progress only grows and is committed as it changes (at most once per interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import jobs
from lexia.engines.base import Audio, Engines
from lexia.errors import LexiaError, NotFound, TranscriptionFailed
from lexia.ids import is_id
from lexia.schemas.lexia import job_resource_fields
from lexia.services.podmetrics import PodMetrics
from lexia.services.transcription import TranscriptionOptions, TranscriptResult, transcribe_audio

log = logging.getLogger("lexia.transcripts")

PROGRESS_INTERVAL = 1.0


class TranscriptStore:
    """Reads and writes transcript rows; every query is scoped to a tenant or an exact id."""

    def __init__(self, db: AsyncEngine, pod: PodMetrics | None = None) -> None:
        self._db = db
        self._pod = pod  # observes jobs this store ends in lexia_job_duration_seconds

    async def _ended(self, row: Any) -> bool:
        """After a terminal UPDATE: observe the job if the UPDATE moved it (never raises)."""
        if row is None:
            return False
        if self._pod is not None:
            await self._pod.record_job(row)
        return True

    async def set_progress(self, job_id: str, progress: float) -> None:
        """Raise the progress of a processing job (never lowers it)."""
        async with self._db.begin() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing")
                .values(progress=sa.func.greatest(jobs.c.progress, min(1.0, max(0.0, progress))))
            )

    async def complete(self, job_id: str, result: TranscriptResult) -> bool:
        """Store the result and move to `completed`; False if the job was already terminal."""
        now = sa.literal(datetime.now(UTC), sa.DateTime(timezone=True))
        retention = sa.case(
            (jobs.c.result_retention_days > 0, now + sa.func.make_interval(0, 0, 0, jobs.c.result_retention_days)),
            else_=sa.null(),
        )
        audio_expiry = sa.case(
            (
                sa.and_(jobs.c.audio_path.is_not(None), jobs.c.audio_retention_hours > 0),
                now + sa.func.make_interval(0, 0, 0, 0, jobs.c.audio_retention_hours),
            ),
            else_=sa.null(),
        )
        async with self._db.begin() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "processing")
                .values(
                    status="completed",
                    stage=None,
                    progress=1.0,
                    result=result.result_json(),
                    warnings=result.warnings,
                    audio_duration=round(result.duration, 3),
                    finished_at=now,
                    lease_expires_at=None,
                    expires_at=retention,
                    audio_expires_at=audio_expiry,
                )
                .returning(jobs.c.kind, jobs.c.started_at, jobs.c.finished_at)
            )
            row = done.first()
        return await self._ended(row)

    async def fail(self, job_id: str, code: str, message: str) -> bool:
        """Move a processing job to `error`."""
        return await self._finish(job_id, "error", error_code=code, error_message=message)

    async def cancel(self, job_id: str) -> bool:
        """Move a processing job to `cancelled`."""
        return await self._finish(job_id, "cancelled")

    async def _finish(self, job_id: str, status: str, **values: Any) -> bool:
        async with self._db.begin() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(("queued", "processing")))
                .values(status=status, stage=None, finished_at=datetime.now(UTC), lease_expires_at=None, **values)
                .returning(jobs.c.kind, jobs.c.started_at, jobs.c.finished_at)
            )
            row = done.first()
        return await self._ended(row)

    async def get(self, tenant_id: str, job_id: str) -> Any:
        """The tenant's transcript row; malformed, unknown and foreign ids are all 404."""
        if not is_id(job_id, "tr"):
            raise NotFound(f"No transcript with id {job_id!r}")
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(jobs).where(
                        jobs.c.id == job_id, jobs.c.tenant_id == tenant_id, jobs.c.kind == "transcription"
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"No transcript with id {job_id!r}")
        return row


WORD_FIELDS = ("text", "start", "end", "confidence", "speaker")


def _word(word: dict[str, Any]) -> dict[str, Any]:
    return {name: word.get(name) for name in WORD_FIELDS}


def stored_words(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The result's words in §4.2 field order (jsonb does not keep key order)."""
    return [_word(w) for w in (result or {}).get("words") or []]


def _utterances(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    raw = result.get("utterances")
    if raw is None:
        return None
    return [
        {
            "speaker": u.get("speaker"),
            "text": u.get("text"),
            "start": u.get("start"),
            "end": u.get("end"),
            "confidence": u.get("confidence"),
            "words": [_word(w) for w in u.get("words") or []],
        }
        for u in raw
    ]


def transcript_object(row: Any) -> dict[str, Any]:
    """The §4.2 transcript object of a row; content fields are null until `completed`."""
    options: dict[str, Any] = row.options or {}
    done = row.status == "completed"
    result: dict[str, Any] = (row.result or {}) if done else {}
    return {
        "id": row.id,
        "object": "transcript",
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
        "speaker_options": {
            "min_speakers_expected": options.get("min_speakers_expected"),
            "max_speakers_expected": options.get("max_speakers_expected"),
        },
        "text": result.get("text"),
        "confidence": result.get("confidence"),
        "words": stored_words(result) if done else None,
        "utterances": _utterances(result) if done else None,
        "warnings": row.warnings or [],
        **job_resource_fields(row, done=done),
    }


@dataclass(slots=True)
class JobProgress:
    """The latest progress reported by the engine (0..1) and the audio length behind it."""

    duration: float
    value: float = 0.0

    def update(self, value: float) -> None:
        """Keep the highest value seen."""
        self.value = max(self.value, min(1.0, value))

    @property
    def processed_seconds(self) -> float:
        """Audio seconds processed so far."""
        return round(self.value * self.duration, 3)


async def run_transcript_job(
    store: TranscriptStore,
    engines: Engines,
    job_id: str,
    audio: Audio,
    *,
    options: TranscriptionOptions,
    progress: JobProgress,
    shutting_down: Callable[[], bool] = lambda: False,
    interval: float = PROGRESS_INTERVAL,
) -> TranscriptResult:
    """Run one transcription to a terminal state (completed, error or cancelled) and return it."""
    written = 0.0

    async def commit_progress() -> None:
        nonlocal written
        while True:
            await asyncio.sleep(interval)
            if progress.value > written:
                value = progress.value
                try:
                    await store.set_progress(job_id, value)
                    written = value
                except Exception as exc:  # progress is best effort; the outcome is written below
                    log.warning("progress update of %s failed: %s", job_id, type(exc).__name__)

    writer = asyncio.create_task(commit_progress())
    try:
        result = await transcribe_audio(engines, audio, options, progress=progress.update)
    except asyncio.CancelledError:
        if shutting_down():
            await _shielded(store.fail(job_id, "internal_error", "The server stopped before the job finished"))
        else:
            await _shielded(store.cancel(job_id))
        raise
    except LexiaError as exc:
        await store.fail(job_id, "transcription_failed", f"Transcription failed: {exc.message}")
        raise TranscriptionFailed(f"Transcription failed: {exc.message}") from exc
    except Exception as exc:
        log.exception("transcription %s failed", job_id)
        await store.fail(job_id, "transcription_failed", "Transcription failed in the speech engine")
        raise TranscriptionFailed("Transcription failed in the speech engine") from exc
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    progress.update(1.0)
    await store.complete(job_id, result)
    return result


async def _shielded(step: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.shield(step)


class SyncJobs:
    """Background tasks of sync jobs (transcriptions, diarizations): they outlive a timed-out or
    vanished request, and are cancelled (recorded as failed) when the process shuts down."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.shutting_down = False

    def start(
        self,
        job_id: str,
        work: Coroutine[Any, Any, Any],
        *,
        finally_: Callable[[], Awaitable[Any]] | None = None,
    ) -> asyncio.Task[Any]:
        """Run `work` in its own task; `finally_` runs when it ends, however it ends."""

        async def wrapper() -> Any:
            try:
                return await work
            finally:
                if finally_ is not None:
                    with contextlib.suppress(Exception):
                        await finally_()

        task = asyncio.create_task(wrapper(), name=f"sync-job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda t: self._done(job_id, t))
        return task

    def _done(self, job_id: str, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: the waiting request (if any) reports it

    def running(self, job_id: str) -> bool:
        """True while the job's task runs in this process."""
        return job_id in self._tasks

    def cancel(self, job_id: str) -> bool:
        """Cancel a running sync job (it stops at the next segment boundary)."""
        task = self._tasks.get(job_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def aclose(self) -> None:
        """Stop every running job (recorded as failed by shutdown) and wait for them."""
        self.shutting_down = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
