"""Running one job attempt: claim, fetch, decode, transcribe or diarize, and one terminal state.

The worker's actors call `JobRunner.run` with an id; sync diarizations call `run_claimed` in the
API process. While the work runs, a heartbeat renews the lease every second or so, commits
progress and stage, and cancels the work at the next segment boundary once the row shows the
job is no longer this attempt's (cancelled through the API, or taken over after a lapsed lease).
Client errors (audio, URL, language) end the job at once; engine failures are retried with
backoff up to LEXIA_JOB_MAX_ATTEMPTS; the wall time of an attempt is capped (code `timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from lexia.audio import decode
from lexia.engines.base import Audio, Engines
from lexia.errors import LexiaError
from lexia.intake import Spool, fetch_url
from lexia.netguard import NetGuard
from lexia.services.diarization import DiarizationOptions, diarize_audio
from lexia.services.lifecycle import Lifecycle, Metered
from lexia.services.transcription import TranscriptionOptions, transcribe_audio
from lexia.settings import Settings

log = logging.getLogger("lexia.jobs")

FAILED_CODE = {"transcription": "transcription_failed", "diarization": "diarization_failed"}
MAX_RETRY_DELAY = 300.0


@dataclass(slots=True)
class Watch:
    """What the heartbeat commits, and whether the job was lost to a cancel or a takeover."""

    stage: str | None
    progress: float = 0.0
    duration: float | None = None
    lost: bool = False
    fetched: Path | None = None  # an audio_url download, kept if the job retains audio

    def engine_progress(self, value: float) -> None:
        """Engine callback (0..1); never goes back."""
        self.progress = max(self.progress, min(1.0, value))


@dataclass(slots=True)
class Outcome:
    """A finished piece of work: the stored result and what it consumed."""

    result: dict[str, Any]
    duration: float
    warnings: list[dict[str, str]] = field(default_factory=list)
    diarized: bool = False


def storage_path(storage_dir: str, tenant_id: str, job_id: str) -> Path:
    """Where a job's retained audio lives."""
    return Path(storage_dir) / tenant_id / f"{job_id}.audio"


class JobRunner:
    """Runs job attempts with the engines of this process."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        engines: Engines,
        settings: Settings,
        *,
        worker: str,
        fetch_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.engines = engines
        self.settings = settings
        self.worker = worker
        self.guard = NetGuard(settings.audio.ssrf_allowlist)
        self._fetch_transport = fetch_transport
        jobs = settings.jobs
        self._interval = max(0.05, min(jobs.progress_interval_seconds, jobs.lease_seconds / 3))
        self._retry_base = min(5.0, jobs.lease_seconds)

    async def run(self, kind: str, job_id: str) -> float | None:
        """Claim and run an async job; returns a retry delay after a transient failure, else None."""
        row = await self.lifecycle.claim(job_id, kind, self.worker)
        if row is None:
            log.info("job %s skipped: finished, cancelled or running elsewhere", job_id)
            return None
        return await self.run_claimed(row)

    async def run_claimed(self, row: Any, audio: Audio | None = None) -> float | None:
        """Run a job this process owns (claimed, or a sync job created `processing`) to its end."""
        watch = Watch(stage=_first_stage(row.kind, audio))
        started = time.perf_counter()
        async with Spool(self.settings.audio.storage_dir) as spool:
            work = asyncio.ensure_future(self._work(row, watch, spool, audio))
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
                await self._interrupted(row)
                raise
            except LexiaError as exc:
                if exc.status < 500:  # the audio, URL or options: retrying cannot help
                    await self._fail(row, watch, started, exc.code, exc.message)
                    return None
                return await self._transient(row, watch, started, exc.message)
            except Exception as exc:
                log.exception("job %s attempt %d failed", row.id, row.attempts)
                return await self._transient(row, watch, started, f"{type(exc).__name__} in the engine")
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            retained = await self._retain_fetched(row, spool, watch)
            await self._complete(row, outcome, started, retained)
        return None

    # -- the work ---------------------------------------------------------------------------

    async def _work(self, row: Any, watch: Watch, spool: Spool, audio: Audio | None) -> Outcome:
        if audio is None:
            audio = await self._load(row, watch, spool)
        watch.duration = audio.duration
        if row.kind == "diarization":
            watch.stage = "diarizing"
            result = await diarize_audio(self.engines, audio, DiarizationOptions.from_json(row.options or {}))
            watch.stage = "finalizing"
            return Outcome(result=result, duration=audio.duration, diarized=True)
        watch.stage = "transcribing"
        options = TranscriptionOptions.from_json(row.options or {})
        done = await transcribe_audio(self.engines, audio, options, progress=watch.engine_progress)
        watch.stage = "finalizing"
        return Outcome(done.result_json(), done.duration, list(done.warnings), done.diarized)

    async def _load(self, row: Any, watch: Watch, spool: Spool) -> Audio:
        """The job's audio: its stored upload, or its audio_url fetched under the SSRF guard."""
        max_seconds = self.settings.audio.max_audio_seconds
        if row.audio_path:
            watch.stage = "decoding"
            return await decode(row.audio_path, max_seconds=max_seconds, param="file")
        watch.stage = "fetching"
        stored = await fetch_url(
            row.audio_url or "",
            spool,
            self.guard,
            max_bytes=self.settings.audio.max_upload_bytes,
            timeout=self.settings.audio.fetch_timeout_seconds,
            transport=self._fetch_transport,
        )
        watch.fetched = stored.path
        watch.stage = "decoding"
        audio = await decode(stored.path, max_seconds=max_seconds, param="audio_url")
        if row.audio_duration is None:  # first attempt to learn the duration: charge it once
            limit = await self.lifecycle.audio_limit(row.key_id, self.settings.limits.audio_seconds_per_hour)
            await self.lifecycle.limiter.debit(row.key_id, "audio", audio.duration, limit)
        return audio

    async def _heartbeat(self, row: Any, watch: Watch, work: asyncio.Future[Outcome]) -> None:
        while not work.done():
            await asyncio.sleep(self._interval)
            try:
                alive = await self.lifecycle.heartbeat(
                    row.id, row.attempts, progress=watch.progress, stage=watch.stage, duration=watch.duration
                )
            except Exception as exc:  # keep working; the lease covers short outages
                log.warning("heartbeat of %s failed: %s", row.id, type(exc).__name__)
                continue
            if not alive:
                watch.lost = True
                work.cancel()
                return

    # -- endings ----------------------------------------------------------------------------

    def _metered(self, row: Any, watch: Watch, started: float, *, complete: bool, diarized: bool) -> Metered:
        duration = watch.duration or 0.0
        seconds = duration if complete else round(watch.progress * duration, 3)
        return Metered(
            stt_seconds=seconds if row.kind == "transcription" else 0.0,
            diarization_seconds=seconds if (row.kind == "diarization" or diarized) else 0.0,
            diarized=diarized,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def _complete(self, row: Any, outcome: Outcome, started: float, retained: str | None) -> None:
        watch = Watch(stage=None, progress=1.0, duration=outcome.duration)
        finished = await self.lifecycle.finish(
            row,
            "completed",
            attempt=row.attempts,
            result=outcome.result,
            warnings=outcome.warnings,
            audio_duration=outcome.duration,
            audio_path=retained,
            metered=self._metered(row, watch, started, complete=True, diarized=outcome.diarized),
        )
        if finished is None:
            log.info("job %s finished elsewhere or was cancelled; result discarded", row.id)
            if retained:
                await anyio.to_thread.run_sync(_unlink, retained)
            return
        await self.lifecycle.after_terminal(finished)

    async def _fail(self, row: Any, watch: Watch, started: float, code: str, message: str) -> None:
        finished = await self.lifecycle.finish(
            row,
            "error",
            attempt=row.attempts,
            error=(code, message),
            metered=self._metered(row, watch, started, complete=False, diarized=False),
        )
        if finished is not None:
            log.info("job %s failed: %s", row.id, code)
            await self.lifecycle.after_terminal(finished)

    async def _transient(self, row: Any, watch: Watch, started: float, detail: str) -> float | None:
        code = FAILED_CODE[row.kind]
        noun = "Transcription" if row.kind == "transcription" else "Diarization"
        message = f"{noun} failed: {detail}"
        if row.mode != "async" or row.attempts >= self.lifecycle.max_attempts:
            await self._fail(row, watch, started, code, message)
            return None
        delay = min(MAX_RETRY_DELAY, self._retry_base * 2.0 ** (int(row.attempts) - 1))
        if not await self.lifecycle.park(row.id, row.attempts, delay=delay, code=code, message=message):
            return None
        log.warning("job %s attempt %d failed (%s); retrying in %.1f s", row.id, row.attempts, detail, delay)
        return delay

    async def _lost(self, row: Any, watch: Watch, started: float) -> None:
        """The row moved on without us: meter what was processed if it was cancelled."""
        current = await self.lifecycle.store.get(row.tenant_id, row.id)
        if current.status == "cancelled":
            log.info("job %s cancelled while running", row.id)
            await self.lifecycle.record_usage(
                current, "cancelled", self._metered(row, watch, started, complete=False, diarized=False)
            )

    async def _interrupted(self, row: Any) -> None:
        """This process is stopping: async jobs run again elsewhere, sync ones cannot (their audio is gone)."""
        with contextlib.suppress(Exception):
            if row.mode == "async":
                await asyncio.shield(self.lifecycle.release(row.id, row.attempts))
            else:
                step = self.lifecycle.finish(
                    row, "error", attempt=row.attempts,
                    error=("internal_error", "The server stopped before the job finished"),
                )
                finished = await asyncio.shield(step)
                if finished is not None:
                    await asyncio.shield(self.lifecycle.after_terminal(finished))

    async def _retain_fetched(self, row: Any, spool: Spool, watch: Watch) -> str | None:
        """Keep a fetched audio_url file when the job retains audio."""
        fetched = watch.fetched
        if fetched is None or row.audio_retention_hours <= 0:
            return None
        target = storage_path(self.settings.audio.storage_dir, row.tenant_id, row.id)
        await anyio.to_thread.run_sync(_move, fetched, target)
        spool.keep(fetched)
        return str(target)


def _first_stage(kind: str, audio: Audio | None) -> str:
    if audio is not None:
        return "diarizing" if kind == "diarization" else "transcribing"
    return "decoding"


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
