"""Transcripts (API.md §4.2–§4.5, scope stt): async and sync creation, list, get, delete, audio, exports."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter
from litestar.response import Stream

from lexia.api.body import FormShape, upload_operation
from lexia.api.deps import current_caller, current_services
from lexia.api.errors import documented
from lexia.api.params import AfterTranscript, IdempotencyKey, Limit, StatusFilter
from lexia.api.security import secured
from lexia.api.submit import WEBHOOK_FIELDS, JobIntake, submitted
from lexia.engines.base import Engines
from lexia.errors import Gone
from lexia.schemas.common import Page, page
from lexia.schemas.transcripts import (
    TRANSCRIPT_LIST_FIELDS,
    TRANSCRIPT_OBJECT_FIELDS,
    Paragraphs,
    Sentences,
    Transcript,
    TranscriptRequest,
    TranscriptSummary,
)
from lexia.services.access.keys import ApiKey
from lexia.services.jobs.kinds import TRANSCRIPTION
from lexia.services.jobs.retention import Retention
from lexia.services.jobs.store import JobStore
from lexia.services.jobs.submission import Submissions
from lexia.services.jobs.sync import SyncJobs
from lexia.services.speech import formats
from lexia.services.speech.intake import AudioIntake
from lexia.services.speech.transcription import require_stt, transcription_options
from lexia.services.speech.transcripts import (
    captions,
    paragraphs_view,
    sentences_view,
    transcript_summary,
    transcript_view,
)
from lexia.settings import Settings

Req = Request[Any, Any, Any]
INTAKE = JobIntake(
    TRANSCRIPTION, TranscriptRequest, FormShape(lists=TRANSCRIPT_LIST_FIELDS, objects=TRANSCRIPT_OBJECT_FIELDS),
    lambda fields, engines, settings, sync: transcription_options(fields, engines, settings, sync=sync),
)
UPLOAD = upload_operation(TranscriptRequest, json_alternative=True)
UPLOAD_SYNC = upload_operation(TranscriptRequest, json_alternative=True, without=WEBHOOK_FIELDS)  # 422 on sync routes
CharsPerCaption = Annotated[int, Parameter(ge=10, le=500, description="caption width")]


class TranscriptionController(Controller):
    """/v1/transcriptions."""

    path = "/v1/transcriptions"
    opt = secured("stt")

    @post(
        "/", status_code=202, opt=secured("stt", "audio"), request_max_body_size=None, operation_class=UPLOAD,
        responses=documented(400, 404, 409, 413, 415, 422),
    )
    async def create(
        self, request: Req, *, submissions: Submissions, engines: Engines, settings: Settings, caller: ApiKey,
        limits: dict[str, int], request_id: str, key: IdempotencyKey = None,
    ) -> Response[Transcript]:
        """Queue a transcription: 202 with the transcript in `queued` and its Location."""
        require_stt(engines)
        done = await INTAKE.create(
            request, submissions, caller=caller, limits=limits, owner=request_id, key=key, mode="async",
            engines=engines, settings=settings.engines,
        )
        return submitted(TRANSCRIPTION, done, 202)

    @post(
        "/sync", status_code=200, opt=secured("stt", "audio"), request_max_body_size=None,
        operation_class=UPLOAD_SYNC,
        responses=documented(400, 404, 409, 413, 415, 422, 504),
    )
    async def create_sync(
        self, request: Req, *, submissions: Submissions, sync_jobs: SyncJobs, engines: Engines, settings: Settings,
        caller: ApiKey, limits: dict[str, int], request_id: str, key: IdempotencyKey = None,
    ) -> Response[Transcript]:
        """Transcribe now in this process and answer the stored transcript (504 with Location past
        the wait limit; the job goes on). A replay (§1.7) answers the transcript as it is now."""
        require_stt(engines)
        done = await INTAKE.create(
            request, submissions, caller=caller, limits=limits, owner=request_id, key=key, mode="sync",
            engines=engines, settings=settings.engines,
        )
        return await INTAKE.answer(done, sync_jobs)

    @get("/", responses=documented(422))
    async def list_transcripts(
        self, *, caller: ApiKey, jobs: JobStore, status: StatusFilter = None, limit: Limit = 20,
        after: AfterTranscript = None,
    ) -> Page[TranscriptSummary]:
        """The tenant's transcripts (async and sync), newest first; `status` filter."""
        rows, more = await jobs.rows(caller.tenant_id, TRANSCRIPTION, status=status, limit=limit, after=after)
        return page([transcript_summary(r) for r in rows], more)

    # A polling route: no DI (see JobController.get_job).
    @get("/{transcript_id:str}", responses=documented(404))
    async def get_transcript(self, transcript_id: str) -> Transcript:
        """One transcript (its queue position while queued; nulls once erased)."""
        jobs = current_services().jobs
        row, position = await jobs.located(current_caller().tenant_id, transcript_id, TRANSCRIPTION)
        return transcript_view(row, position)

    @delete("/{transcript_id:str}", status_code=200, responses=documented(404))
    async def delete_transcript(
        self, transcript_id: str, caller: ApiKey, retention: Retention, sync_jobs: SyncJobs
    ) -> Transcript:
        """Cancel if still running, erase the content and the audio; the tombstone (idempotent)."""
        row = await retention.delete(caller.tenant_id, transcript_id, TRANSCRIPTION)
        sync_jobs.cancel(transcript_id)
        return transcript_view(row)

    @get("/{transcript_id:str}/audio", media_type="application/octet-stream", responses=documented(404, 410))
    async def get_audio(self, transcript_id: str, caller: ApiKey, jobs: JobStore, intake: AudioIntake) -> Stream:
        """The original uploaded bytes while the audio is retained (410 deleted afterwards), streamed
        from the audio store (disk or S3)."""
        row = await jobs.row(caller.tenant_id, transcript_id, TRANSCRIPTION)
        if row.audio_path is None or row.deleted_at is not None or not await intake.store.exists(row.audio_path):
            raise Gone(f"The audio of transcript {transcript_id} is not retained")
        name = row.audio_filename or f"{transcript_id}.audio"
        return Stream(
            intake.store.read(row.audio_path), media_type="application/octet-stream",
            headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"},
        )

    @get("/{transcript_id:str}/srt", media_type="text/plain; charset=utf-8", responses=documented(404, 409, 410, 422))
    async def export_srt(
        self, transcript_id: str, caller: ApiKey, jobs: JobStore,
        chars_per_caption: CharsPerCaption = formats.DEFAULT_CHARS_PER_CAPTION, speaker_labels: bool | None = None,
    ) -> str:
        """SubRip captions (speaker prefixes by default when the transcript has speakers)."""
        row = await jobs.row(caller.tenant_id, transcript_id, TRANSCRIPTION)
        return formats.srt(captions(row, chars_per_caption, speaker_labels))

    @get("/{transcript_id:str}/vtt", media_type="text/vtt; charset=utf-8", responses=documented(404, 409, 410, 422))
    async def export_vtt(
        self, transcript_id: str, caller: ApiKey, jobs: JobStore,
        chars_per_caption: CharsPerCaption = formats.DEFAULT_CHARS_PER_CAPTION, speaker_labels: bool | None = None,
    ) -> str:
        """WebVTT captions with voice tags."""
        row = await jobs.row(caller.tenant_id, transcript_id, TRANSCRIPTION)
        return formats.vtt(captions(row, chars_per_caption, speaker_labels))

    @get("/{transcript_id:str}/sentences", responses=documented(404, 409, 410))
    async def export_sentences(self, transcript_id: str, caller: ApiKey, jobs: JobStore) -> Sentences:
        """Words grouped into sentences."""
        return sentences_view(await jobs.row(caller.tenant_id, transcript_id, TRANSCRIPTION))

    @get("/{transcript_id:str}/paragraphs", responses=documented(404, 409, 410))
    async def export_paragraphs(self, transcript_id: str, caller: ApiKey, jobs: JobStore) -> Paragraphs:
        """Sentences grouped into paragraphs."""
        return paragraphs_view(await jobs.row(caller.tenant_id, transcript_id, TRANSCRIPTION))
