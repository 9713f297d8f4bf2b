"""What the job routes share: reading a job body (multipart or JSON) and answering a submission.

Transcriptions and diarizations are submitted the same way (API.md §4.1, §4.4, §5): a multipart
upload streamed to the submission's spool, or a JSON body with `audio_url`; the fields become
the kind's request struct, the service validates them into options, and the answer carries
`Location` (and `Idempotency-Replayed` for a replay).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from lexia.api.body import FormShape, body_chunks, convert, form_values, is_json, media_type, read_json_object
from lexia.api.deps import current_services, jobs_headers
from lexia.engines.base import Engines
from lexia.errors import UnsupportedMediaType
from lexia.services.access.idempotency import parse_key
from lexia.services.access.keys import ApiKey
from lexia.services.jobs.kinds import JobKind
from lexia.services.jobs.submission import JobRequest, JobSubmission, Mode, Submissions, Submitted
from lexia.services.jobs.sync import SyncJobs
from lexia.settings import EngineSettings

Req = Request[Any, Any, Any]
S = TypeVar("S", bound=msgspec.Struct)
# Refused on the sync routes (422), so left out of their documented bodies.
WEBHOOK_FIELDS = ("webhook_url", "webhook_auth_header_name", "webhook_auth_header_value")


async def receive_job(
    request: Req,
    submission: JobSubmission,
    struct: type[S],
    form: FormShape,
    validate: Callable[[S], dict[str, Any]],
) -> JobRequest:
    """Receive a job body into the submission's spool and validate it into a JobRequest."""
    jobs_headers(request, submission.limits, submission.slots_held)
    media = media_type(request)
    if media == "multipart/form-data":
        declared = request.headers.get("content-length")
        received = await submission.receive(
            body_chunks(request), content_type=request.headers.get("content-type", ""),
            content_length=int(declared) if declared and declared.isdigit() else None,
        )
        data = form_values(received.fields, list_fields=form.lists, object_fields=form.objects)
        fields, audio = convert(data, struct, lax=True), received.audio
    elif is_json(media):
        data = await read_json_object(request, current_services().settings.server.max_json_bytes)
        fields, audio = convert(data, struct, lax=False), None
    else:
        raise UnsupportedMediaType(
            "Content-Type must be multipart/form-data or application/json", code="unsupported_content_type"
        )
    return JobRequest(
        route=request.url.path,
        fields=data,
        options=validate(fields),
        audio=audio,
        audio_url=getattr(fields, "audio_url", None),
        webhook_url=getattr(fields, "webhook_url", None),
        webhook_auth_header_name=getattr(fields, "webhook_auth_header_name", None),
        webhook_auth_header_value=getattr(fields, "webhook_auth_header_value", None),
        metadata=dict(getattr(fields, "metadata", None) or {}),
        audio_retention_hours=getattr(fields, "audio_retention_hours", None),
        result_retention_days=getattr(fields, "result_retention_days", None),
    )


@dataclass(frozen=True, slots=True)
class JobIntake:
    """How the create routes of one job kind read their bodies: the kind, its request struct and
    multipart encoding, and the service that turns the fields into stored options."""

    kind: JobKind
    struct: type[msgspec.Struct]
    form: FormShape
    options: Callable[[Any, Engines, EngineSettings, bool], dict[str, Any]]  # (fields, engines, settings, sync)

    async def create(
        self, request: Req, submissions: Submissions, *, caller: ApiKey, limits: dict[str, int], owner: str,
        key: str | None, mode: Mode, engines: Engines, settings: EngineSettings,
    ) -> Submitted:
        """Admit, receive and validate the body, then submit: the job created, replayed, or running here."""
        sync = mode == "sync"

        def validate(fields: Any) -> dict[str, Any]:
            return self.options(fields, engines, settings, sync)

        async with submissions.open(caller, limits, self.kind, parse_key(key), mode=mode, owner=owner) as submission:
            return await submission.submit(await receive_job(request, submission, self.struct, self.form, validate))

    async def answer(self, done: Submitted, sync_jobs: SyncJobs) -> Response[Any]:
        """A sync submission's answer: the finished resource, or the replayed one as it is now (§1.7)."""
        if done.run is None:
            return submitted(self.kind, done, 200)
        row = await sync_jobs.wait(done.run)
        return Response(self.kind.view(row, None), headers={"Location": f"{self.kind.path}/{row.id}"})


def submitted(kind: JobKind, done: Submitted, status_code: int) -> Response[Any]:
    """The resource with Location (and Idempotency-Replayed on a replay)."""
    headers = {"Location": f"{kind.path}/{done.row.id}"}
    if done.replayed:
        headers["Idempotency-Replayed"] = "true"
    return Response(kind.view(done.row, done.queue_position), status_code=status_code, headers=headers)
