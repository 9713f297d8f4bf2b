"""Deletion and retention (§4.4, §8.3): tombstones, audio removal and the periodic purge.

DELETE and expiry perform the same erasure: the job is cancelled if still active, its content
(text, words, utterances, segments, prompt, key terms, audio URL and file name, metadata, the
webhook auth value, webhook payload metadata) is set to null and `deleted_at` is stamped; the
tombstone keeps ids, status, timings, duration, language and option flags. The audio file is
removed after the row says so, so a crash in between leaves a path the purge still finds.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio

from lexia.db.rows import JobRow
from lexia.services.jobs.kinds import ACTIVE, JobKind
from lexia.services.jobs.lifecycle import Lifecycle

log = logging.getLogger("lexia.retention")

BATCH = 500


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge pass did."""

    expired: int = 0
    audio_removed: int = 0
    keys_released: int = 0
    orphans_removed: int = 0


class Retention:
    """Deletes resources on request and purges what retention has expired."""

    def __init__(self, lifecycle: Lifecycle, *, storage_dir: str | None = None, orphan_grace: float = 3600) -> None:
        self.lifecycle = lifecycle
        self.table = lifecycle.table
        self.storage_dir = Path(storage_dir) if storage_dir else None
        self.orphan_grace = orphan_grace

    async def delete(self, tenant_id: str, job_id: str, kind: JobKind) -> JobRow:
        """DELETE of a transcript or diarization: cancel if active, erase, remove the audio (idempotent)."""
        row = await self.lifecycle.store.row(tenant_id, job_id, kind)
        if row.deleted_at is not None:
            return row
        if row.status in ACTIVE:
            await self.lifecycle.end(row, "cancelled", tenant_id=tenant_id)
        erased = await self.table.erase(job_id, self.lifecycle.clock.now())
        if erased is not None and erased.audio_path:
            await self.lifecycle.remove_audio(job_id, erased.audio_path)
        return await self.lifecycle.store.row(tenant_id, job_id, kind)

    async def purge(self, now: datetime | None = None) -> PurgeReport:
        """Erase expired results, remove expired audio, release expired idempotency keys, remove orphans."""
        moment = now or self.lifecycle.clock.now()
        expired = await self._purge_results(moment)
        removed = await self._purge_audio(moment)
        released = await self.table.release_idempotency_keys(moment)
        orphans = await self._purge_orphans(moment)
        if expired or removed or released or orphans:
            log.info(
                "retention: %d results erased, %d audio files removed, %d idempotency keys released, "
                "%d orphan files removed", expired, removed, released, orphans,
            )
        return PurgeReport(expired, removed, released, orphans)

    async def _purge_orphans(self, moment: datetime) -> int:
        """Stored audio no row references, and leftover spooled uploads (a crash between a commit and
        a file operation), once old enough."""
        if self.storage_dir is None:
            return 0
        cutoff = moment.timestamp() - self.orphan_grace
        local = await anyio.to_thread.run_sync(_stale_files, self.storage_dir, cutoff)
        spooled = [p for p in local if p.suffix != ".audio"]
        stored = await self.lifecycle.audio.stale(cutoff)
        ids = [Path(location).name.removesuffix(".audio") for location in stored]
        referenced: set[str] = set()
        for start in range(0, len(ids), BATCH):
            referenced |= await self.table.referenced_audio(ids[start : start + BATCH])
        doomed = [location for location in stored if location not in referenced]
        await anyio.to_thread.run_sync(_unlink_all, spooled)
        for location in doomed:
            await self.lifecycle.audio.delete(location)
        return len(spooled) + len(doomed)

    async def _purge_results(self, moment: datetime) -> int:
        count = 0
        while ids := await self.table.expired(moment, BATCH):
            for job_id in ids:
                if await self.table.erase(job_id, moment) is not None:
                    count += 1
        return count

    async def _purge_audio(self, moment: datetime) -> int:
        count = 0
        seen: set[str] = set()
        while fresh := [(i, p) for i, p in await self.table.audio_due(moment, BATCH) if i not in seen]:
            for job_id, path in fresh:
                seen.add(job_id)
                await self.lifecycle.remove_audio(job_id, path)
                count += 1
        return count


def _stale_files(root: Path, cutoff: float) -> list[Path]:
    """Job audio (`<tenant>/<id>.audio`) and spooled uploads (`incoming/`) last modified before cutoff."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                found.append(Path(entry.path))
    return found


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
