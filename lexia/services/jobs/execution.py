"""Running one job attempt: claim, fetch, decode, run the kind's work, and one terminal state.

The worker's actors call `JobRunner.run` with an id; sync jobs call `run_claimed` in the API
process with their decoded audio. While the work runs, a heartbeat renews the lease every second
or so, commits progress and stage, and stops the work at the next segment boundary once the row
shows the attempt is no longer current (cancelled through the API, or taken over after a lapsed
lease); the process that owns a sync job can stop it the same way (`Watch.stop`). Client errors
(audio, URL, language) end the job at once; engine failures are retried with backoff up to
LEXIA_JOB_MAX_ATTEMPTS (async jobs); the wall time of an attempt is capped (code `timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lexia.db.rows import JobRow
from lexia.engines.base import Audio, Engines
from lexia.errors import LexiaError
from lexia.intake import Spool
from lexia.logs import Outage
from lexia.services.jobs.kinds import KINDS, JobKind, Outcome
from lexia.services.jobs.lifecycle import Lifecycle, Metered
from lexia.services.speech.intake import AudioIntake
from lexia.settings import Settings

log = logging.getLogger("lexia.jobs")

MAX_RETRY_DELAY = 300.0


@dataclass(slots=True)
class Watch:
    """An attempt's progress and stage (committed by the heartbeat) and whether it was stopped."""

    stage: str | None
    progress: float = 0.0
    duration: float | None = None
    lost: bool = False  # the row moved on (cancelled, taken over) or the owner stopped it
    fetched: Path | None = None  # an audio_url download, kept if the job retains audio
    work: asyncio.Future[Outcome] | None = None

    def engine_progress(self, value: float) -> None:
        """Engine callback (0..1); never goes back."""
        self.progress = max(self.progress, min(1.0, value))

    def stop(self) -> None:
        """Stop the work at its next boundary, as when the row shows the job was cancelled."""
        self.lost = True
        if self.work is not None:
            self.work.cancel()


class JobRunner:
    """Runs job attempts with the engines of this process."""

    def __init__(
        self, lifecycle: Lifecycle, engines: Engines, intake: AudioIntake, settings: Settings, *, worker: str
    ) -> None:
        self.lifecycle = lifecycle
        self.engines = engines
        self.intake = intake
        self.settings = settings
        self.worker = worker
        jobs = settings.jobs
        self._interval = max(0.05, min(jobs.progress_interval_seconds, jobs.lease_seconds / 3))
        self._retry_base = min(5.0, jobs.lease_seconds)
        self._heartbeats = Outage(log, "job heartbeats")

    async def run(self, kind: JobKind, job_id: str) -> float | None:
        """Claim and run an async job; returns a retry delay after a transient failure, else None."""
        row = await self.lifecycle.claim(job_id, kind, self.worker)
        if row is None:
            log.info("job %s skipped: finished, cancelled or running elsewhere", job_id)
            return None
        return await self.run_claimed(row)

    async def run_claimed(self, row: JobRow, audio: Audio | None = None, watch: Watch | None = None) -> float | None:
        """Run a job this process owns (claimed, or a sync job created `processing`) to its end."""
        kind = KINDS[row.kind]
        watch = watch or Watch(stage=None)
        watch.stage = kind.stage if audio is not None else "decoding"
        started = time.perf_counter()
        async with self.intake.spool() as spool:
            work = watch.work = asyncio.ensure_future(self._work(row, kind, watch, spool, audio))
            beat = asyncio.ensure_future(self._heartbeat(row, watch, work))
            try:
                async with asyncio.timeout(self.settings.jobs.timeout_seconds):
                    outcome = await work
            except TimeoutError:
                limit = self.settings.jobs.timeout_seconds
                await self._fail(row, watch, started, "timeout", f"The job exceeded its time limit of {limit:g} s")
                return None
            except asyncio.CancelledError:
                if watch.lost and not _cancelling():
                    await self._lost(row, watch, started)
                    return None
                await _stopped(beat)  # a heartbeat committed after the hand-back would take the lease again
                await self._interrupted(row)
                raise
            except LexiaError as exc:
                if exc.status < 500:  # the audio, URL or options: retrying cannot help
                    await self._fail(row, watch, started, exc.code, exc.message)
                    return None
                return await self._transient(row, kind, watch, started, exc.message)
            except Exception as exc:
                log.exception("job %s attempt %d failed", row.id, row.attempts)
                return await self._transient(row, kind, watch, started, f"{type(exc).__name__} in the engine")
            finally:
                await _stopped(beat)
            retained = await self._retain_fetched(row, spool, watch)
            await self._complete(row, outcome, started, retained)
        return None

    # -- the work ---------------------------------------------------------------------------

    async def _work(self, row: JobRow, kind: JobKind, watch: Watch, spool: Spool, audio: Audio | None) -> Outcome:
        if audio is None:
            audio = await self._load(row, watch, spool)
        watch.duration = audio.duration
        watch.stage = kind.stage
        outcome = await kind.work(self.engines, audio, row.options or {}, watch.engine_progress)
        watch.stage = "finalizing"
        return outcome

    async def _load(self, row: JobRow, watch: Watch, spool: Spool) -> Audio:
        """The job's audio: its stored upload, or its audio_url fetched under the SSRF guard."""
        max_seconds = self.settings.audio.max_audio_seconds
        if row.audio_path:
            watch.stage = "decoding"
            return await self.intake.decode_stored(spool, row.audio_path, max_seconds=max_seconds, param="file")
        watch.stage = "fetching"
        stored = await self.intake.fetch(spool, row.audio_url or "")
        watch.fetched = stored.path
        watch.stage = "decoding"
        audio = await self.intake.decode(stored.path, max_seconds=max_seconds, param="audio_url")
        if row.audio_duration is None:  # first attempt to learn the duration: charge it once
            limit = await self.lifecycle.audio_limit(row.key_id, self.settings.limits.audio_seconds_per_hour)
            await self.lifecycle.limiter.debit(row.key_id, "audio", audio.duration, limit)
        return audio

    async def _heartbeat(self, row: JobRow, watch: Watch, work: asyncio.Future[Outcome]) -> None:
        while not work.done():
            await asyncio.sleep(self._interval)
            try:
                alive = await self.lifecycle.heartbeat(
                    row.id, row.attempts, progress=watch.progress, stage=watch.stage, duration=watch.duration
                )
            except Exception as exc:  # keep working; the lease covers short outages
                self._heartbeats.failed(exc)
                continue
            self._heartbeats.ok()
            if not alive:
                watch.stop()
                return

    # -- endings ----------------------------------------------------------------------------

    @staticmethod
    def _metered(watch: Watch, started: float, *, complete: bool, diarized: bool) -> Metered:
        duration = watch.duration or 0.0
        seconds = duration if complete else round(watch.progress * duration, 3)
        return Metered(seconds=seconds, diarized=diarized, latency_ms=(time.perf_counter() - started) * 1000)

    async def _complete(self, row: JobRow, outcome: Outcome, started: float, retained: str | None) -> None:
        watch = Watch(stage=None, progress=1.0, duration=outcome.duration)
        ended = await self.lifecycle.end(
            row,
            "completed",
            attempt=row.attempts,
            result=outcome.result,
            warnings=outcome.warnings,
            audio_duration=outcome.duration,
            audio_path=retained,
            metered=self._metered(watch, started, complete=True, diarized=outcome.diarized),
        )
        if ended is None:
            log.info("job %s finished elsewhere or was cancelled; result discarded", row.id)
            if retained:
                await self.intake.remove(retained)

    async def _fail(self, row: JobRow, watch: Watch, started: float, code: str, message: str) -> None:
        metered = self._metered(watch, started, complete=False, diarized=False)
        if await self.lifecycle.end(row, "error", attempt=row.attempts, error=(code, message), metered=metered):
            log.info("job %s failed: %s", row.id, code)

    async def _transient(self, row: JobRow, kind: JobKind, watch: Watch, started: float, detail: str) -> float | None:
        message = f"{kind.name.capitalize()} failed: {detail}"
        if row.mode != "async" or row.attempts >= self.lifecycle.max_attempts:
            await self._fail(row, watch, started, kind.failure_code, message)
            return None
        delay = min(MAX_RETRY_DELAY, self._retry_base * 2.0 ** (int(row.attempts) - 1))
        if not await self.lifecycle.park(row.id, row.attempts, delay=delay, code=kind.failure_code, message=message):
            return None
        log.warning("job %s attempt %d failed (%s); retrying in %.1f s", row.id, row.attempts, detail, delay)
        return delay

    async def _lost(self, row: JobRow, watch: Watch, started: float) -> None:
        """Stopped: the row moved on without us (meter what was processed if it was cancelled), or
        the owner stopped an attempt whose row is still current (it is cancelled now, metered)."""
        metered = self._metered(watch, started, complete=False, diarized=False)
        current = await self.lifecycle.table.get(row.id)
        if current is not None and current.status == "processing" and current.attempts == row.attempts:
            if await self.lifecycle.end(row, "cancelled", attempt=row.attempts, metered=metered) is not None:
                log.info("job %s stopped and cancelled by its owner", row.id)
                return
            current = await self.lifecycle.table.get(row.id)  # cancelled meanwhile by someone else
        if current is not None and current.status == "cancelled":
            log.info("job %s cancelled while running", row.id)
            await self.lifecycle.record_usage(current, "cancelled", metered)

    async def _interrupted(self, row: JobRow) -> None:
        """This process is stopping: async jobs are handed back (lease released, id enqueued again, so
        another worker starts them at once); sync ones cannot run elsewhere (their audio is gone)."""
        with contextlib.suppress(Exception):
            if row.mode == "async":
                await asyncio.shield(self.lifecycle.hand_back(row))
            else:
                error = ("internal_error", "The server stopped before the job finished")
                await asyncio.shield(self.lifecycle.end(row, "error", attempt=row.attempts, error=error))

    async def _retain_fetched(self, row: JobRow, spool: Spool, watch: Watch) -> str | None:
        """Keep a fetched audio_url file when the job retains audio."""
        fetched = watch.fetched
        if fetched is None or row.audio_retention_hours <= 0:
            return None
        target = self.intake.job_location(row.tenant_id, row.id)
        await self.intake.keep(spool, fetched, target)
        return target


async def _stopped(task: asyncio.Future[None]) -> None:
    """Cancel a helper task and wait until it has ended (a no-op once it has)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
