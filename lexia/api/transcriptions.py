"""Lexia transcript routes (scope stt): POST /v1/transcriptions/sync, GET by id, §4.5 exports."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, get, post

from lexia.api.deps import bool_param, caller, note_usage, services
from lexia.api.jobs import admit, receive_job, sync_audio, sync_jobs
from lexia.api.security import route_opt
from lexia.api.transcript_jobs import transcript_validator
from lexia.errors import Conflict, Gone, ProcessingTimeout, ServiceUnavailable, ValidationFailed
from lexia.intake import Spool
from lexia.schemas.transcripts import TRANSCRIPT_LIST_FIELDS, TRANSCRIPT_OBJECT_FIELDS, TranscriptRequest
from lexia.services import formats
from lexia.services.resources import transcript_view
from lexia.services.transcription import TranscriptionOptions, require_stt
from lexia.services.transcripts import (
    JobProgress,
    TranscriptStore,
    run_transcript_job,
    stored_words,
    transcript_object,
)

Req = Request[Any, Any, Any]
def meter(request: Req, seconds: float, *, diarized: bool) -> None:
    """Record processed audio seconds on the request's usage event and in the metrics."""
    metrics = services(request).metrics
    note_usage(request, kind="stt", audio_seconds=seconds, diarization_seconds=seconds if diarized else 0.0)
    metrics.audio_seconds.labels("stt").inc(seconds)
    if diarized:
        metrics.audio_seconds.labels("diarization").inc(seconds)


def _replayed(row: Any) -> Response[Any]:
    """A replayed sync request: the transcript as it is now (§1.7)."""
    return Response(
        transcript_object(row), status_code=200,
        headers={"Idempotency-Replayed": "true", "Location": f"/v1/transcriptions/{row.id}"},
    )


class TranscriptController(Controller):
    """/v1/transcriptions: the sync route, reads and exports."""

    path = "/v1/transcriptions"

    @post("/sync", opt=route_opt("stt", "audio"), status_code=200)
    async def create_sync(self, request: Req) -> Response[Any]:
        """Transcribe now and return the stored transcript (504 with Location past the wait limit).

        Admission is the async route's (§1.7 Idempotency-Key, a concurrency slot): a replay of
        an earlier request answers its transcript's current state without new work.
        """
        svc = services(request)
        settings = svc.settings
        require_stt(svc.engines)
        me = caller(request)
        store = TranscriptStore(svc.db, pod=svc.pod)
        admission = await admit(request, "transcription", mode="sync")
        try:
            async with Spool(settings.audio.storage_dir) as spool:
                job = await receive_job(
                    request, spool, "transcription", "/v1/transcriptions/sync", TranscriptRequest,
                    list_fields=TRANSCRIPT_LIST_FIELDS, object_fields=TRANSCRIPT_OBJECT_FIELDS,
                    validate=transcript_validator(svc, sync=True),
                )
                options = TranscriptionOptions.from_json(job.options)
                replay = admission.replay_of(job)
                if replay is not None:
                    return _replayed(await store.get(me.tenant_id, replay.id))
                audio = await sync_audio(request, spool, job)
                # The transcription runs here without renewing a lease: its row is leased for
                # the job timeout, after which the sweeper counts it as lost.
                done = await admission.submit(job, spool, audio=audio, lease_seconds=settings.jobs.timeout_seconds)
                if done.replayed:
                    return _replayed(await store.get(me.tenant_id, done.row.id))
                job_id = done.row.id
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
        finally:
            await admission.__aexit__(None, None, None)
        await self._wait(request, task, progress, options.speaker_labels)
        if jobs.shutting_down:
            raise ServiceUnavailable("The server is shutting down; the transcription was stopped")
        return Response(transcript_object(await store.get(me.tenant_id, job_id)), status_code=200)

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
