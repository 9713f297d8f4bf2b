"""Sync jobs: run in this API process on its own engines, awaited by the request that made them.

A sync job is a job row created `processing` and run by `JobRunner.run_claimed` in a task of
its own, so it outlives a request that times out (504 with Location) or goes away. DELETE of
the job (`cancel`) stops it as the heartbeat would; shutting the process down stops every run
(recorded as failed) and answers the waiting requests 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from lexia.db.rows import JobRow
from lexia.engines.base import Audio
from lexia.errors import InternalError, ProcessingTimeout
from lexia.services.drain import stopping
from lexia.services.jobs.execution import JobRunner, Watch
from lexia.services.jobs.kinds import KINDS
from lexia.services.jobs.store import JobStore


@dataclass(slots=True)
class SyncRun:
    """One sync job running here."""

    row: JobRow
    task: asyncio.Task[float | None]
    watch: Watch


class SyncJobs:
    """The sync jobs of one process."""

    def __init__(self, runner: JobRunner, store: JobStore, *, timeout: float) -> None:
        self._runner = runner
        self._store = store
        self._timeout = timeout
        self._runs: dict[str, SyncRun] = {}
        self.shutting_down = False

    def start(self, row: JobRow, audio: Audio) -> SyncRun:
        """Run a sync job (created `processing`) in its own task."""
        watch = Watch(stage=KINDS[row.kind].stage)
        task = asyncio.create_task(self._runner.run_claimed(row, audio, watch), name=f"sync-job-{row.id}")
        run = self._runs[row.id] = SyncRun(row, task, watch)
        task.add_done_callback(lambda t: self._done(row.id, t))
        return run

    def _done(self, job_id: str, task: asyncio.Task[float | None]) -> None:
        self._runs.pop(job_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: the waiting request (if any) reports the outcome from the row

    def running(self, job_id: str) -> bool:
        """True while the job runs in this process."""
        return job_id in self._runs

    def cancel(self, job_id: str) -> bool:
        """Stop a sync job running here (its row was cancelled): it ends at the next segment boundary."""
        run = self._runs.get(job_id)
        if run is None:
            return False
        run.watch.stop()
        return True

    async def wait(self, run: SyncRun) -> JobRow:
        """The job's row once it has ended; 504 (it goes on) past the sync wait limit, 503 on shutdown,
        500 with the job's error code when it failed. A cancelled job's row is returned as it is."""
        kind = KINDS[run.row.kind]
        try:
            await asyncio.wait_for(asyncio.shield(run.task), timeout=self._timeout)
        except TimeoutError:
            raise ProcessingTimeout(
                f"The {kind.name} did not finish within {self._timeout:g} s; it continues: poll the Location",
                headers={"Location": f"{kind.path}/{run.row.id}"},
            ) from None
        except asyncio.CancelledError:
            if not run.task.cancelled():
                raise  # this request was cancelled (the client went away); the job goes on
        if self.shutting_down:
            raise stopping(kind.name)
        row = await self._store.row(run.row.tenant_id, run.row.id, kind)
        if row.status == "error":
            message = row.error_message or f"The {kind.name} failed"
            raise InternalError(message, code=row.error_code or kind.failure_code)
        return row

    def stop_all(self) -> None:
        """Stop every running job now (each is recorded as failed; its request answers 503)."""
        self.shutting_down = True
        for run in list(self._runs.values()):
            run.task.cancel()

    async def aclose(self) -> None:
        """Stop every running job (recorded as failed) and wait for them."""
        self.stop_all()
        for run in list(self._runs.values()):
            with contextlib.suppress(BaseException):
                await run.task
