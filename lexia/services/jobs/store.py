"""Tenant-scoped reads of jobs and their resources: one row, pages, queue positions, the §6 job object.

Malformed ids, unknown ids, another tenant's ids and ids of another kind are all the same 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lexia.db.jobs import JobTable
from lexia.db.rows import JobRow
from lexia.errors import NotFound, ValidationFailed
from lexia.schemas.common import Page, iso, page
from lexia.schemas.jobs import Job, JobError
from lexia.services.jobs.kinds import ACTIVE, KINDS, STATUSES, TERMINAL, JobKind, kind_of, result_url


def job_view(row: JobRow, queue_position: int | None = None) -> Job:
    """The §6 job object."""
    terminal = row.status in TERMINAL
    failed = row.status == "error"
    return Job(
        id=row.id,
        kind=row.kind,
        mode=row.mode,
        status=row.status,
        stage=None if terminal else (row.stage or ("queued" if row.status == "queued" else None)),
        progress=round(float(row.progress), 4),
        queue_position=queue_position if row.status == "queued" else None,
        attempts=int(row.attempts),
        created_at=iso(row.created_at) or "",
        started_at=iso(row.started_at),
        finished_at=iso(row.finished_at),
        error=JobError(code=row.error_code or "internal_error", message=row.error_message or "The job failed")
        if failed
        else None,
        result_url=result_url(row),
    )


def parse_filter(value: str | None, allowed: Sequence[str], param: str) -> str | None:
    """A list filter: None when absent, else one of `allowed` (422 otherwise, an empty value too)."""
    if value is None:
        return None
    if value not in allowed:
        raise ValidationFailed(f"{param} must be one of {', '.join(allowed)}", param=param)
    return value


def parse_after(value: str | None, kinds: Iterable[JobKind]) -> str | None:
    """`after` for a list of these kinds: an id of one of them (it need not exist)."""
    if value is None:
        return None
    allowed = list(kinds)
    found = kind_of(value)
    if found is None or found not in allowed:
        prefixes = " or ".join(f"{k.prefix}_" for k in allowed)
        raise ValidationFailed(f"after must be an id starting with {prefixes}", param="after")
    return value


class JobStore:
    """Reads of one tenant's jobs and resources."""

    def __init__(self, table: JobTable) -> None:
        self.table = table

    async def row(self, tenant_id: str, job_id: str, kind: JobKind | None = None) -> JobRow:
        """One row of the tenant (of one kind if given); 404 otherwise."""
        found = kind_of(job_id)
        noun = kind.noun if kind is not None else "job"
        row = None
        if found is not None and (kind is None or found is kind):
            row = await self.table.get(job_id, tenant_id=tenant_id)
        if row is None:
            raise NotFound(f"No {noun} with id {job_id!r}")
        return row

    async def positions(self, rows: Iterable[JobRow]) -> dict[str, int]:
        """Queue positions of the queued rows among all queued jobs."""
        return await self.table.queue_positions([r.id for r in rows if r.status == "queued"])

    async def job(self, tenant_id: str, job_id: str) -> Job:
        """The job object, with its queue position while queued."""
        row = await self.row(tenant_id, job_id)
        return job_view(row, (await self.positions([row])).get(row.id))

    async def jobs(
        self, tenant_id: str, *, kind: str | None, status: str | None, limit: int, after: str | None
    ) -> Page[Job]:
        """The tenant's jobs, newest first; `kind` and `status` filters (422 on unknown values)."""
        kind = parse_filter(kind, tuple(KINDS), "kind")
        status = parse_filter(status, STATUSES, "status")
        after = parse_after(after, KINDS.values())
        rows, more = await self.table.page(tenant_id, kind=kind, status=status, limit=limit, after=after)
        positions = await self.positions(rows)
        return page([job_view(r, positions.get(r.id)) for r in rows], more)

    async def located(self, tenant_id: str, job_id: str, kind: JobKind) -> tuple[JobRow, int | None]:
        """A resource's row and its queue position (None unless queued)."""
        row = await self.row(tenant_id, job_id, kind)
        return row, (await self.positions([row])).get(row.id)

    async def rows(
        self, tenant_id: str, kind: JobKind, *, status: str | None, limit: int, after: str | None
    ) -> tuple[list[JobRow], bool]:
        """A page of the tenant's resources of one kind, newest first; `status` filter."""
        status = parse_filter(status, STATUSES, "status")
        after = parse_after(after, [kind])
        return await self.table.page(tenant_id, kind=kind.name, status=status, limit=limit, after=after)

    async def active_counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> jobs queued or processing, all tenants (zeros included)."""
        counts = {(kind, status): 0 for kind in KINDS for status in ACTIVE}
        counts.update(await self.table.active_counts())
        return counts

