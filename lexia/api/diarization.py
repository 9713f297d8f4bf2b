"""Diarization routes (scope diarization): async and sync creation, list, get, delete, RTTM (§5)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, delete, get, post

from lexia.api.deps import caller, list_body, page_params, services
from lexia.api.jobs import admit, created_response, receive_job, submit_async, sync_audio, sync_jobs
from lexia.api.security import route_opt
from lexia.errors import Conflict, DiarizationFailed, Gone, ProcessingTimeout, ServiceUnavailable
from lexia.intake import Spool
from lexia.schemas.diarization import DIARIZATION_LIST_FIELDS, DIARIZATION_OBJECT_FIELDS, DiarizationRequest
from lexia.services.diarization import diarization_object, options_from_request, rttm
from lexia.services.jobs import STATUSES, parse_filter
from lexia.services.resources import summary_view
from lexia.services.submission import Submitted

Req = Request[Any, Any, Any]
def _validator(request: Req, *, sync: bool) -> Any:
    svc = services(request)

    def validate(fields: Any) -> dict[str, Any]:
        return options_from_request(fields, svc.engines, svc.settings.engines, sync=sync).to_json()

    return validate


@post("/v1/diarization", opt=route_opt("diarization", "audio"), status_code=202)
async def create_diarization_job(request: Req) -> Response[Any]:
    """Queue a diarization: 202 with the diarization in `queued` and its Location."""
    return await submit_async(
        request, "diarization", DiarizationRequest,
        list_fields=DIARIZATION_LIST_FIELDS, object_fields=DIARIZATION_OBJECT_FIELDS,
        validate=_validator(request, sync=False),
    )


@post("/v1/diarization/sync", opt=route_opt("diarization", "audio"), status_code=200)
async def create_diarization_sync(request: Req) -> Response[Any]:
    """Diarize now in this process; 200 with the stored diarization (504 with Location past the wait limit)."""
    svc = services(request)
    settings = svc.settings
    me = caller(request)
    admission = await admit(request, "diarization", mode="sync")
    try:
        async with Spool(settings.audio.storage_dir) as spool:
            job = await receive_job(
                request, spool, "diarization", "/v1/diarization/sync", DiarizationRequest,
                list_fields=DIARIZATION_LIST_FIELDS, object_fields=DIARIZATION_OBJECT_FIELDS,
                validate=_validator(request, sync=True),
            )
            replay = admission.replay_of(job)
            if replay is not None:
                return created_response("diarization", Submitted(replay, replayed=True), 200)
            audio = await sync_audio(request, spool, job)
            done = await admission.submit(job, spool, audio=audio)
            if done.replayed:
                return created_response("diarization", done, 200)
            task = sync_jobs(request).start(done.row.id, svc.jobs.runner.run_claimed(done.row, audio))
    finally:
        await admission.__aexit__(None, None, None)
    await _wait(request, task, done.row.id)
    row = await svc.jobs.lifecycle.store.get(me.tenant_id, done.row.id, "diarization")
    if row.status == "error":
        raise DiarizationFailed(row.error_message or "Diarization failed")
    return Response(diarization_object(row), status_code=200, headers={"Location": f"/v1/diarization/{row.id}"})


async def _wait(request: Req, task: asyncio.Task[Any], job_id: str) -> None:
    timeout = services(request).settings.audio.sync_timeout_seconds
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
    except TimeoutError:
        raise ProcessingTimeout(
            f"The diarization did not finish within {timeout:g} s; it continues: poll the Location",
            headers={"Location": f"/v1/diarization/{job_id}"},
        ) from None
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # this request was cancelled (client gone); the run goes on
        if sync_jobs(request).shutting_down:
            raise ServiceUnavailable("The server is shutting down; the diarization was stopped") from None
        # Cancelled through the jobs API: the row says `cancelled`, answered as it is.


@get("/v1/diarization", opt=route_opt("diarization"))
async def list_diarizations(request: Req) -> dict[str, Any]:
    """The tenant's diarizations, newest first; `status` filter."""
    store = services(request).jobs.lifecycle.store
    page = page_params(request, "dz")
    status = parse_filter(request.query_params.get("status"), STATUSES, "status")
    rows, more = await store.list(
        caller(request).tenant_id, kind="diarization", status=status, limit=page.limit, after=page.after
    )
    return list_body([summary_view(r) for r in rows], more)


@get("/v1/diarization/{diarization_id:str}", opt=route_opt("diarization"))
async def get_diarization(request: Req) -> dict[str, Any]:
    """One diarization of the tenant."""
    diarization_id = request.path_params["diarization_id"]
    store = services(request).jobs.lifecycle.store
    row = await store.get(caller(request).tenant_id, diarization_id, "diarization")
    positions = await store.queue_positions([row])
    return diarization_object(row, positions.get(row.id))


@delete("/v1/diarization/{diarization_id:str}", opt=route_opt("diarization"), status_code=200)
async def delete_diarization(request: Req) -> dict[str, Any]:
    """Cancel if still running, erase segments, speakers, URL, metadata and the audio (idempotent)."""
    diarization_id = request.path_params["diarization_id"]
    row = await services(request).jobs.retention.delete(caller(request).tenant_id, diarization_id, "diarization")
    return diarization_object(row)


@get("/v1/diarization/{diarization_id:str}/rttm", opt=route_opt("diarization"))
async def export_rttm(request: Req) -> Response[str]:
    """RTTM lines; 409 not_ready before `completed`, 410 deleted for a tombstone."""
    diarization_id = request.path_params["diarization_id"]
    row = await services(request).jobs.lifecycle.store.get(caller(request).tenant_id, diarization_id, "diarization")
    if row.deleted_at is not None:
        raise Gone(f"Diarization {diarization_id} was deleted")
    if row.status != "completed":
        raise Conflict(f"Diarization {diarization_id} is {row.status}, not completed", code="not_ready")
    return Response(rttm(row), media_type="text/plain; charset=utf-8")
