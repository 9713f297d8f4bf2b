"""Diarizations (API.md §5, scope diarization): async and sync creation, list, get, delete, RTTM."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post

from lexia.api.body import FormShape, upload_operation
from lexia.api.deps import current_caller, current_services
from lexia.api.errors import documented
from lexia.api.params import AfterDiarization, IdempotencyKey, Limit, StatusFilter
from lexia.api.security import secured
from lexia.api.submit import WEBHOOK_FIELDS, JobIntake, submitted
from lexia.engines.base import Engines
from lexia.schemas.common import Page, page
from lexia.schemas.diarization import (
    DIARIZATION_LIST_FIELDS,
    DIARIZATION_OBJECT_FIELDS,
    Diarization,
    DiarizationRequest,
    DiarizationSummary,
)
from lexia.services.access.keys import ApiKey
from lexia.services.jobs.kinds import DIARIZATION
from lexia.services.jobs.retention import Retention
from lexia.services.jobs.store import JobStore
from lexia.services.jobs.submission import Submissions
from lexia.services.jobs.sync import SyncJobs
from lexia.services.speech.diarization import diarization_options, diarization_summary, diarization_view, rttm
from lexia.settings import Settings

Req = Request[Any, Any, Any]
INTAKE = JobIntake(
    DIARIZATION, DiarizationRequest, FormShape(lists=DIARIZATION_LIST_FIELDS, objects=DIARIZATION_OBJECT_FIELDS),
    lambda fields, engines, settings, sync: diarization_options(fields, engines, settings, sync=sync),
)
UPLOAD = upload_operation(DiarizationRequest, json_alternative=True)
UPLOAD_SYNC = upload_operation(DiarizationRequest, json_alternative=True, without=WEBHOOK_FIELDS)  # 422 on sync routes


class DiarizationController(Controller):
    """/v1/diarization."""

    path = "/v1/diarization"
    opt = secured("diarization")

    @post(
        "/", status_code=202, opt=secured("diarization", "audio"), request_max_body_size=None,
        operation_class=UPLOAD, responses=documented(400, 409, 413, 415, 422),
    )
    async def create(
        self, request: Req, *, submissions: Submissions, engines: Engines, settings: Settings, caller: ApiKey,
        limits: dict[str, int], request_id: str, key: IdempotencyKey = None,
    ) -> Response[Diarization]:
        """Queue a diarization: 202 with the diarization in `queued` and its Location."""
        done = await INTAKE.create(
            request, submissions, caller=caller, limits=limits, owner=request_id, key=key, mode="async",
            engines=engines, settings=settings.engines,
        )
        return submitted(DIARIZATION, done, 202)

    @post(
        "/sync", status_code=200, opt=secured("diarization", "audio"), request_max_body_size=None,
        operation_class=UPLOAD_SYNC, responses=documented(400, 409, 413, 415, 422, 504),
    )
    async def create_sync(
        self, request: Req, *, submissions: Submissions, sync_jobs: SyncJobs, engines: Engines, settings: Settings,
        caller: ApiKey, limits: dict[str, int], request_id: str, key: IdempotencyKey = None,
    ) -> Response[Diarization]:
        """Diarize now in this process; 200 with the stored diarization (504 with Location past the wait limit)."""
        done = await INTAKE.create(
            request, submissions, caller=caller, limits=limits, owner=request_id, key=key, mode="sync",
            engines=engines, settings=settings.engines,
        )
        return await INTAKE.answer(done, sync_jobs)

    @get("/", responses=documented(422))
    async def list_diarizations(
        self, *, caller: ApiKey, jobs: JobStore, status: StatusFilter = None, limit: Limit = 20,
        after: AfterDiarization = None,
    ) -> Page[DiarizationSummary]:
        """The tenant's diarizations, newest first; `status` filter."""
        rows, more = await jobs.rows(caller.tenant_id, DIARIZATION, status=status, limit=limit, after=after)
        return page([diarization_summary(r) for r in rows], more)

    # A polling route: no DI (see JobController.get_job).
    @get("/{diarization_id:str}", responses=documented(404))
    async def get_diarization(self, diarization_id: str) -> Diarization:
        """One diarization of the tenant."""
        jobs = current_services().jobs
        row, position = await jobs.located(current_caller().tenant_id, diarization_id, DIARIZATION)
        return diarization_view(row, position)

    @delete("/{diarization_id:str}", status_code=200, responses=documented(404))
    async def delete_diarization(
        self, diarization_id: str, caller: ApiKey, retention: Retention, sync_jobs: SyncJobs
    ) -> Diarization:
        """Cancel if still running, erase segments, speakers, URL, metadata and the audio (idempotent)."""
        row = await retention.delete(caller.tenant_id, diarization_id, DIARIZATION)
        sync_jobs.cancel(diarization_id)
        return diarization_view(row)

    @get("/{diarization_id:str}/rttm", media_type="text/plain; charset=utf-8", responses=documented(404, 409, 410))
    async def export_rttm(self, diarization_id: str, caller: ApiKey, jobs: JobStore) -> str:
        """RTTM lines; 409 not_ready before `completed`, 410 deleted for a tombstone."""
        return rttm(await jobs.row(caller.tenant_id, diarization_id, DIARIZATION))
