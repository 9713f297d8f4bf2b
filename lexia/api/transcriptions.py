"""Lexia transcript routes (scope stt): POST /v1/transcriptions/sync, GET by id, §4.5 exports."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Controller, Litestar, Request, Response, get, post

from lexia.api.deps import bool_param, caller, caller_limits, note_usage, services
from lexia.api.security import route_opt
from lexia.api.sources import convert, hold_slot, read_audio_body, release_slot
from lexia.audio import decode
from lexia.errors import Conflict, Gone, ProcessingTimeout, ServiceUnavailable, ValidationFailed
from lexia.ids import new_id
from lexia.intake import Spool, StoredAudio, fetch_url
from lexia.netguard import NetGuard
from lexia.schemas.transcripts import TRANSCRIPT_LIST_FIELDS, TRANSCRIPT_OBJECT_FIELDS, TranscriptRequest
from lexia.services import formats
from lexia.services.resources import transcript_view
from lexia.services.tenants import TenantService
from lexia.services.transcription import options_from_request, require_diarizer, require_stt
from lexia.services.transcripts import (
    JobProgress,
    NewTranscript,
    SyncJobs,
    TranscriptStore,
    run_transcript_job,
    stored_words,
    transcript_object,
)

Req = Request[Any, Any, Any]
SYNC_JOBS_STATE = "stt_sync_jobs"


@contextlib.asynccontextmanager
async def sync_jobs_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Own the sync transcription tasks; on shutdown they stop and are recorded as failed."""
    jobs = SyncJobs()
    app.state[SYNC_JOBS_STATE] = jobs
    try:
        yield
    finally:
        await jobs.aclose()


def sync_jobs(request: Req) -> SyncJobs:
    """The app's sync job registry (created by sync_jobs_lifespan, or on first use)."""
    state = request.app.state
    if SYNC_JOBS_STATE not in state:
        state[SYNC_JOBS_STATE] = SyncJobs()
    jobs: SyncJobs = state[SYNC_JOBS_STATE]
    return jobs


def meter(request: Req, seconds: float, *, diarized: bool) -> None:
    """Record processed audio seconds on the request's usage event and in the metrics."""
    metrics = services(request).metrics
    note_usage(request, kind="stt", audio_seconds=seconds, diarization_seconds=seconds if diarized else 0.0)
    metrics.audio_seconds.labels("stt").inc(seconds)
    if diarized:
        metrics.audio_seconds.labels("diarization").inc(seconds)


def _retain(stored: StoredAudio, spool: Spool, storage_dir: str, tenant_id: str, job_id: str) -> Path:
    """Move a spooled file to the tenant's storage (audio retention > 0)."""
    target = Path(storage_dir) / tenant_id / f"{job_id}.audio"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stored.path, target)
    spool.keep(stored.path)
    return target


class TranscriptController(Controller):
    """/v1/transcriptions: the sync route, reads and exports."""

    path = "/v1/transcriptions"

    @post("/sync", opt=route_opt("stt", "audio"), status_code=200)
    async def create_sync(self, request: Req) -> dict[str, Any]:
        """Transcribe now and return the stored transcript (504 with Location past the wait limit)."""
        svc = services(request)
        settings = svc.settings
        require_stt(svc.engines)
        me = caller(request)
        job_id = new_id("tr")
        await hold_slot(request, job_id, settings.jobs.timeout_seconds)
        handed = False
        retained: Path | None = None
        store = TranscriptStore(svc.db)
        try:
            async with Spool(settings.audio.storage_dir) as spool:
                body = await read_audio_body(
                    request, spool, allow_json=True,
                    list_fields=TRANSCRIPT_LIST_FIELDS, object_fields=TRANSCRIPT_OBJECT_FIELDS,
                )
                fields = convert(body.data, TranscriptRequest, lax=body.multipart)
                options = options_from_request(fields, svc.engines, settings.engines, sync=True)
                if options.speaker_labels:
                    require_diarizer(svc.engines)
                if (body.audio is None) == (fields.audio_url is None):
                    raise ValidationFailed("Send exactly one audio source: a file or an audio_url", param="file")
                param = "file" if body.audio is not None else "audio_url"
                stored = body.audio or await fetch_url(
                    fields.audio_url or "",
                    spool,
                    NetGuard(settings.audio.ssrf_allowlist),
                    max_bytes=settings.audio.max_upload_bytes,
                    timeout=settings.audio.fetch_timeout_seconds,
                )
                audio = await decode(stored.path, max_seconds=settings.audio.sync_max_audio_seconds, param=param)
                tenant = await TenantService(
                    svc.db, audio_hours=settings.retention.audio_hours, result_days=settings.retention.result_days
                ).get(me.tenant_id)
                audio_hours = (
                    fields.audio_retention_hours
                    if fields.audio_retention_hours is not None
                    else tenant.audio_retention_hours
                )
                result_days = (
                    fields.result_retention_days
                    if fields.result_retention_days is not None
                    else tenant.result_retention_days
                )
                if audio_hours > 0:
                    retained = _retain(stored, spool, settings.audio.storage_dir, me.tenant_id, job_id)
            await svc.limiter.debit(me.id, "audio", audio.duration, caller_limits(request)["audio_seconds_per_hour"])
            await store.create(
                NewTranscript(
                    id=job_id,
                    tenant_id=me.tenant_id,
                    key_id=me.id,
                    options=options,
                    audio_url=fields.audio_url,
                    audio_filename=stored.filename if body.audio is not None else None,
                    audio_duration=round(audio.duration, 3),
                    audio_path=str(retained) if retained else None,
                    audio_retention_hours=audio_hours,
                    result_retention_days=result_days,
                    metadata=dict(fields.metadata or {}),
                    lease_seconds=settings.jobs.timeout_seconds,
                )
            )
            retained = None  # the row owns the file now
            jobs = sync_jobs(request)
            progress = JobProgress(audio.duration)
            limiter = svc.limiter
            task = jobs.start(
                job_id,
                run_transcript_job(
                    store, svc.engines, job_id, audio,
                    options=options, progress=progress, shutting_down=lambda: jobs.shutting_down,
                ),
                finally_=lambda: limiter.release_slot(me.id, job_id),
            )
            handed = True
            await self._wait(request, task, progress, options.speaker_labels)
            if jobs.shutting_down:
                raise ServiceUnavailable("The server is shutting down; the transcription was stopped")
            return transcript_object(await store.get(me.tenant_id, job_id))
        finally:
            if not handed:
                await release_slot(request, job_id)
            if retained is not None:
                with contextlib.suppress(OSError):
                    retained.unlink()

    @staticmethod
    async def _wait(request: Req, task: asyncio.Task[Any], progress: JobProgress, diarized: bool) -> None:
        """Wait for the job; 504 after the sync limit (it goes on), engine errors re-raised."""
        timeout = services(request).settings.audio.sync_timeout_seconds
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
        except TimeoutError:
            meter(request, progress.duration, diarized=diarized)  # the job continues to completion
            job_id = task.get_name().removeprefix("sync-job-")
            raise ProcessingTimeout(
                f"The transcription did not finish within {timeout:g} s; it continues: poll the Location",
                headers={"Location": f"/v1/transcriptions/{job_id}"},
            ) from None
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this request was cancelled; the job goes on
            meter(request, progress.processed_seconds, diarized=diarized)  # cancelled via the jobs API
        except Exception:
            meter(request, progress.processed_seconds, diarized=diarized)
            raise
        else:
            meter(request, progress.duration, diarized=diarized)

    @get("/{transcript_id:str}", opt=route_opt("stt"))
    async def get_transcript(self, request: Req) -> dict[str, Any]:
        """One transcript of the caller's tenant (its queue position while queued; nulls once erased)."""
        transcript_id = request.path_params["transcript_id"]
        row = await TranscriptStore(services(request).db).get(caller(request).tenant_id, transcript_id)
        positions = await services(request).jobs.lifecycle.store.queue_positions([row])
        return transcript_view(row, positions.get(row.id))

    @get("/{transcript_id:str}/srt", opt=route_opt("stt"))
    async def export_srt(self, request: Req) -> Response[str]:
        """SubRip captions."""
        cues = await _cues(request, request.path_params["transcript_id"])
        return Response(formats.srt(cues), media_type="text/plain; charset=utf-8")

    @get("/{transcript_id:str}/vtt", opt=route_opt("stt"))
    async def export_vtt(self, request: Req) -> Response[str]:
        """WebVTT captions."""
        cues = await _cues(request, request.path_params["transcript_id"])
        return Response(formats.vtt(cues), media_type="text/vtt; charset=utf-8")

    @get("/{transcript_id:str}/sentences", opt=route_opt("stt"))
    async def export_sentences(self, request: Req) -> dict[str, Any]:
        """Words grouped into sentences."""
        row = await _completed(request, request.path_params["transcript_id"])
        return {**_export_head(row), "sentences": formats.sentences(stored_words(row.result))}

    @get("/{transcript_id:str}/paragraphs", opt=route_opt("stt"))
    async def export_paragraphs(self, request: Req) -> dict[str, Any]:
        """Sentences grouped into paragraphs."""
        row = await _completed(request, request.path_params["transcript_id"])
        return {**_export_head(row), "paragraphs": formats.paragraphs(stored_words(row.result))}


async def _completed(request: Req, transcript_id: str) -> Any:
    row = await TranscriptStore(services(request).db).get(caller(request).tenant_id, transcript_id)
    if row.deleted_at is not None:
        raise Gone(f"Transcript {transcript_id} was deleted")
    if row.status != "completed":
        raise Conflict(f"Transcript {transcript_id} is {row.status}, not completed", code="not_ready")
    return row


def _export_head(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "confidence": row.result.get("confidence"),
        "audio_duration": round(row.audio_duration, 3) if row.audio_duration is not None else None,
    }


async def _cues(request: Req, transcript_id: str) -> list[formats.Cue]:
    raw = request.query_params.get("chars_per_caption")
    width = formats.DEFAULT_CHARS_PER_CAPTION
    if raw is not None:
        if not raw.isdigit() or not 10 <= int(raw) <= 500:
            raise ValidationFailed("chars_per_caption must be an integer from 10 to 500", param="chars_per_caption")
        width = int(raw)
    row = await _completed(request, transcript_id)
    words = stored_words(row.result)
    has_speakers = any(w.get("speaker") for w in words)
    with_speakers = bool_param(request, "speaker_labels", has_speakers)
    return formats.captions(words, width, with_speakers)
