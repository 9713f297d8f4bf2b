"""Job routes (scope jobs): GET /v1/jobs, GET and DELETE /v1/jobs/{id}; the shared async-submit flow."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, delete, get

from lexia.api.deps import RL_HEADERS_STATE, Services, caller, caller_limits, list_body, services
from lexia.api.requestid import request_id
from lexia.api.security import route_opt
from lexia.api.sources import convert, read_audio_body
from lexia.audio import decode
from lexia.engines.base import Audio
from lexia.errors import RateLimited, ValidationFailed
from lexia.intake import Spool, fetch_url
from lexia.netguard import NetGuard
from lexia.services.idempotency import HEADER, parse_key
from lexia.services.jobs import KINDS, RESULT_PATH, STATUSES, job_object, parse_after, parse_filter
from lexia.services.resources import resource_view
from lexia.services.submission import Admission, JobRequest, Submitted
from lexia.services.transcripts import SyncJobs

Req = Request[Any, Any, Any]
# In-process registries of sync jobs that stop only when told to (sync diarizations watch their row).
SYNC_JOBS_STATE = "sync_jobs"


def limit_param(request: Req) -> int:
    """`limit` of §1.5 (1..100, default 20)."""
    raw = request.query_params.get("limit")
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ValidationFailed("limit must be an integer from 1 to 100", param="limit")
    return int(raw)


async def admit(request: Req, kind: str, *, mode: str = "async") -> Admission:
    """Admission before the body is read: Idempotency-Key, queue cap (503), a concurrency slot (429)."""
    svc = services(request)
    idempotency_key = parse_key(request.headers.get(HEADER.lower()))
    admission = svc.jobs.submitter.admit(
        caller(request), caller_limits(request), kind, idempotency_key, owner=request_id(request.scope), mode=mode
    )
    try:
        await admission.__aenter__()
    except RateLimited as exc:
        svc.metrics.rate_limited.labels(exc.code).inc()
        raise
    if admission.slots_held is not None:
        limit = caller_limits(request)["max_concurrent_jobs"]
        headers: dict[str, str] = request.scope["state"].setdefault(RL_HEADERS_STATE, {})
        headers["X-RateLimit-Limit-Jobs"] = str(limit)
        headers["X-RateLimit-Remaining-Jobs"] = str(max(0, limit - admission.slots_held) if limit > 0 else 0)
    return admission


def created_response(kind: str, done: Submitted, status_code: int) -> Response[Any]:
    """The resource with Location (and Idempotency-Replayed on a replay)."""
    headers = {"Location": f"{RESULT_PATH[kind]}/{done.row.id}"}
    if done.replayed:
        headers["Idempotency-Replayed"] = "true"
    return Response(resource_view(done.row, done.queue_position), status_code=status_code, headers=headers)


async def receive_job(
    request: Req,
    spool: Spool,
    kind: str,
    route: str,
    struct: type[msgspec.Struct],
    *,
    list_fields: frozenset[str],
    object_fields: frozenset[str],
    validate: Callable[[Any], dict[str, Any]],
) -> JobRequest:
    """Receive a job route's body into `spool`, validate its fields and sources: the JobRequest."""
    body = await read_audio_body(request, spool, allow_json=True, list_fields=list_fields, object_fields=object_fields)
    fields = convert(body.data, struct, lax=body.multipart)
    options = validate(fields)
    audio_url = getattr(fields, "audio_url", None)
    if (body.audio is None) == (audio_url is None):
        raise ValidationFailed("Send exactly one audio source: a file or an audio_url", param="file")
    return JobRequest(
        kind=kind,
        route=route,
        fields=body.data,
        options=options,
        audio=body.audio,
        audio_url=audio_url,
        webhook_url=getattr(fields, "webhook_url", None),
        webhook_auth_header_name=getattr(fields, "webhook_auth_header_name", None),
        webhook_auth_header_value=getattr(fields, "webhook_auth_header_value", None),
        metadata=dict(getattr(fields, "metadata", None) or {}),
        audio_retention_hours=getattr(fields, "audio_retention_hours", None),
        result_retention_days=getattr(fields, "result_retention_days", None),
    )


async def sync_audio(request: Req, spool: Spool, job: JobRequest) -> Audio:
    """A sync job's audio: fetched if it came as a URL, decoded within the sync limit, debited."""
    svc = services(request)
    settings = svc.settings.audio
    stored = job.audio or await fetch_url(
        job.audio_url or "", spool, NetGuard(settings.ssrf_allowlist),
        max_bytes=settings.max_upload_bytes, timeout=settings.fetch_timeout_seconds,
    )
    param = "file" if job.audio is not None else "audio_url"
    audio = await decode(stored.path, max_seconds=settings.sync_max_audio_seconds, param=param)
    key = caller(request)
    await svc.limiter.debit(key.id, "audio", audio.duration, caller_limits(request)["audio_seconds_per_hour"])
    return audio


async def submit_async(
    request: Req,
    kind: str,
    struct: type[msgspec.Struct],
    *,
    list_fields: frozenset[str],
    object_fields: frozenset[str],
    validate: Callable[[Any], dict[str, Any]],
) -> Response[Any]:
    """POST of an async job: receive the body, validate, commit, enqueue; 202 with the resource."""
    svc = services(request)
    admission = await admit(request, kind)
    try:
        async with Spool(svc.settings.audio.storage_dir) as spool:
            job = await receive_job(
                request, spool, kind, RESULT_PATH[kind], struct,
                list_fields=list_fields, object_fields=object_fields, validate=validate,
            )
            done = await admission.submit(job, spool)
    finally:
        await admission.__aexit__(None, None, None)
    return created_response(kind, done, 202)


@get("/v1/jobs", opt=route_opt("jobs"))
async def list_jobs(request: Req) -> dict[str, Any]:
    """The tenant's jobs, newest first; filters `kind` and `status`."""
    store = services(request).jobs.lifecycle.store
    kind = parse_filter(request.query_params.get("kind"), KINDS, "kind")
    status = parse_filter(request.query_params.get("status"), STATUSES, "status")
    limit = limit_param(request)
    after = parse_after(request.query_params.get("after"), KINDS)
    rows, more = await store.list(caller(request).tenant_id, kind=kind, status=status, limit=limit, after=after)
    positions = await store.queue_positions(rows)
    return list_body([job_object(r, positions.get(r.id)) for r in rows], more)


@get("/v1/jobs/{job_id:str}", opt=route_opt("jobs"))
async def get_job(request: Req) -> dict[str, Any]:
    """One job of the tenant."""
    job_id = request.path_params["job_id"]
    store = services(request).jobs.lifecycle.store
    row = await store.get(caller(request).tenant_id, job_id)
    positions = await store.queue_positions([row])
    return job_object(row, positions.get(row.id))


@delete("/v1/jobs/{job_id:str}", opt=route_opt("jobs"), status_code=200)
async def cancel_job(request: Req) -> dict[str, Any]:
    """Cancel a queued or running job (409 not_cancellable once terminal)."""
    job_id = request.path_params["job_id"]
    row = await services(request).jobs.lifecycle.cancel(caller(request).tenant_id, job_id)
    stop_local(request, job_id)
    return job_object(row)


@contextlib.asynccontextmanager
async def sync_jobs_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Own the sync jobs (transcriptions and diarizations) this process runs; on shutdown they
    stop and are recorded as failed."""
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


def stop_local(request: Req, job_id: str) -> None:
    """Stop a sync job running in this process now (others notice the row within a second)."""
    registry = request.app.state.get(SYNC_JOBS_STATE)
    if registry is not None:
        registry.cancel(job_id)


async def refresh_job_gauges(svc: Services) -> None:
    """Set lexia_jobs{kind,status} for queued and processing jobs (before /metrics renders)."""
    for (kind, status), count in (await svc.jobs.lifecycle.store.active_counts()).items():
        svc.metrics.jobs.labels(kind, status).set(count)
