"""Jobs (API.md §6)."""

from __future__ import annotations

from typing import Literal

import msgspec


class JobError(msgspec.Struct, kw_only=True):
    """Why a job ended in `error`."""

    code: str
    message: str


class Job(msgspec.Struct, kw_only=True):
    """The job object: every transcript and diarization is a job with the same id."""

    id: str
    object: Literal["job"] = "job"
    kind: str
    mode: str
    status: str
    stage: str | None
    progress: float
    queue_position: int | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: JobError | None
    result_url: str
