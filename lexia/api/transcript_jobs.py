"""Async transcription routes (scope stt): POST /v1/transcriptions, the list, DELETE by id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from litestar import Request, Response, delete, get, post
from litestar.response import File

from lexia.api.deps import Services, caller, list_body, page_params, services
from lexia.api.jobs import stop_local, submit_async
from lexia.api.security import route_opt
from lexia.errors import Gone
from lexia.schemas.transcripts import TRANSCRIPT_LIST_FIELDS, TRANSCRIPT_OBJECT_FIELDS, TranscriptRequest
from lexia.services.jobs import STATUSES, parse_filter
from lexia.services.resources import summary_view, transcript_view
from lexia.services.transcription import options_from_request, require_diarizer, require_stt

Req = Request[Any, Any, Any]


def transcript_validator(svc: Services, *, sync: bool) -> Callable[[Any], dict[str, Any]]:
    """Validate a transcript request's fields into stored options (a diarizer if it wants speakers)."""

    def validate(fields: Any) -> dict[str, Any]:
        options = options_from_request(fields, svc.engines, svc.settings.engines, sync=sync)
        if options.speaker_labels:
            require_diarizer(svc.engines)
        return options.to_json()

    return validate


@post("/v1/transcriptions", opt=route_opt("stt", "audio"), status_code=202)
async def create_transcript_job(request: Req) -> Response[Any]:
    """Queue a transcription: 202 with the transcript in `queued` and its Location."""
    svc = services(request)
    require_stt(svc.engines)
    return await submit_async(
        request, "transcription", TranscriptRequest,
        list_fields=TRANSCRIPT_LIST_FIELDS, object_fields=TRANSCRIPT_OBJECT_FIELDS,
        validate=transcript_validator(svc, sync=False),
    )


@get("/v1/transcriptions", opt=route_opt("stt"))
async def list_transcripts(request: Req) -> dict[str, Any]:
    """The tenant's transcripts (async and sync), newest first; `status` filter."""
    store = services(request).jobs.lifecycle.store
    page = page_params(request, "tr")
    status = parse_filter(request.query_params.get("status"), STATUSES, "status")
    rows, more = await store.list(
        caller(request).tenant_id, kind="transcription", status=status, limit=page.limit, after=page.after
    )
    return list_body([summary_view(r) for r in rows], more)


@delete("/v1/transcriptions/{transcript_id:str}", opt=route_opt("stt"), status_code=200)
async def delete_transcript(request: Req) -> dict[str, Any]:
    """Cancel if still running, erase the content and the audio; the tombstone is returned (idempotent)."""
    transcript_id = request.path_params["transcript_id"]
    row = await services(request).jobs.retention.delete(caller(request).tenant_id, transcript_id, "transcription")
    stop_local(request, transcript_id)
    return transcript_view(row)


@get("/v1/transcriptions/{transcript_id:str}/audio", opt=route_opt("stt"))
async def get_transcript_audio(request: Req) -> File:
    """The original uploaded bytes while the audio is retained (410 deleted afterwards)."""
    transcript_id = request.path_params["transcript_id"]
    row = await services(request).jobs.lifecycle.store.get(caller(request).tenant_id, transcript_id, "transcription")
    if row.audio_path is None or row.deleted_at is not None or not await anyio.Path(row.audio_path).is_file():
        raise Gone(f"The audio of transcript {transcript_id} is not retained")
    name = row.audio_filename or f"{transcript_id}.audio"
    return File(path=row.audio_path, filename=name, media_type="application/octet-stream")
