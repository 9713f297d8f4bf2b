"""Jobs (API.md §6, scope jobs): GET /v1/jobs, GET and DELETE /v1/jobs/{id}."""

from __future__ import annotations

from litestar import Controller, delete, get

from lexia.api.deps import current_caller, current_services
from lexia.api.errors import documented
from lexia.api.params import AfterJob, JobKindFilter, Limit, StatusFilter
from lexia.api.security import secured
from lexia.schemas.common import Page
from lexia.schemas.jobs import Job
from lexia.services.access.keys import ApiKey
from lexia.services.jobs.lifecycle import Lifecycle
from lexia.services.jobs.store import JobStore, job_view
from lexia.services.jobs.sync import SyncJobs


class JobController(Controller):
    """/v1/jobs."""

    path = "/v1/jobs"
    opt = secured("jobs")

    @get("/", responses=documented(422))
    async def list_jobs(
        self, *, caller: ApiKey, jobs: JobStore, kind: JobKindFilter = None, status: StatusFilter = None,
        limit: Limit = 20, after: AfterJob = None,
    ) -> Page[Job]:
        """The tenant's jobs, newest first; filters `kind` and `status`."""
        return await jobs.jobs(caller.tenant_id, kind=kind, status=status, limit=limit, after=after)

    # A polling route: the services and the caller come from the request's context rather than DI
    # (Litestar resolves two dependencies in a task group per request, about 5 % of a poll's CPU).
    @get("/{job_id:str}", responses=documented(404))
    async def get_job(self, job_id: str) -> Job:
        """One job of the tenant."""
        return await current_services().jobs.job(current_caller().tenant_id, job_id)

    @delete("/{job_id:str}", status_code=200, responses=documented(404, 409))
    async def cancel_job(self, job_id: str, caller: ApiKey, lifecycle: Lifecycle, sync_jobs: SyncJobs) -> Job:
        """Cancel a queued or running job (409 not_cancellable once terminal); a sync job running here stops now."""
        row = await lifecycle.cancel(caller.tenant_id, job_id)
        sync_jobs.cancel(job_id)
        return job_view(row)
