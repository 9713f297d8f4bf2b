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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from lexia.db.tables import jobs, webhook_deliveries
from lexia.services.jobs import ACTIVE, TERMINAL
from lexia.services.lifecycle import Lifecycle

log = logging.getLogger("lexia.retention")

BATCH = 500
_ERASED_OPTIONS = {"prompt": None, "keyterms_prompt": None}
_NO_METADATA = sa.cast({"metadata": None}, JSONB)


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
        self.db = lifecycle.db
        self.storage_dir = Path(storage_dir) if storage_dir else None
        self.orphan_grace = orphan_grace

    async def delete(self, tenant_id: str, job_id: str, kind: str) -> Any:
        """DELETE of a transcript or diarization: cancel if active, erase, remove the audio (idempotent)."""
        row = await self.lifecycle.store.get(tenant_id, job_id, kind)
        if row.deleted_at is not None:
            return row
        if row.status in ACTIVE:
            finished = await self.lifecycle.finish(row, "cancelled", tenant_id=tenant_id)
            if finished is not None:
                await self.lifecycle.after_terminal(finished)
        erased = await self._erase(job_id)
        if erased is not None and erased.audio_path:
            await self.lifecycle.remove_audio(job_id, erased.audio_path)
        return await self.lifecycle.store.get(tenant_id, job_id, kind)

    async def _erase(self, job_id: str) -> Any:
        now = datetime.now(UTC)
        kept = sa.case(
            (jobs.c.result.is_(None), sa.null()),
            else_=sa.func.jsonb_build_object(
                "language_code", jobs.c.result["language_code"], "speaker_count", jobs.c.result["speaker_count"]
            ),
        )
        stmt = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None), jobs.c.status.in_(TERMINAL))
            .values(
                result=kept,
                options=jobs.c.options.op("||")(sa.cast(_ERASED_OPTIONS, JSONB)),
                audio_url=None,
                audio_filename=None,
                metadata=None,
                webhook_auth_header_value=None,
                deleted_at=now,
                audio_expires_at=now,
            )
            .returning(jobs)
        )
        async with self.db.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is not None:
                await conn.execute(
                    webhook_deliveries.update()
                    .where(webhook_deliveries.c.resource_id == job_id)
                    .values(payload=webhook_deliveries.c.payload.op("||")(_NO_METADATA))
                )
        return row

    async def purge(self, now: datetime | None = None) -> PurgeReport:
        """Erase expired results, remove expired audio, release expired idempotency keys."""
        moment = now or datetime.now(UTC)
        expired = await self._purge_results(moment)
        removed = await self._purge_audio(moment)
        released = await self._release_keys(moment)
        orphans = await self._purge_orphans(moment)
        if expired or removed or released or orphans:
            log.info(
                "retention: %d results erased, %d audio files removed, %d idempotency keys released, "
                "%d orphan files removed", expired, removed, released, orphans,
            )
        return PurgeReport(expired, removed, released, orphans)

    async def _purge_orphans(self, moment: datetime) -> int:
        """Files no row references (a crash between a commit and a file operation), once old enough."""
        if self.storage_dir is None:
            return 0
        cutoff = moment.timestamp() - self.orphan_grace
        candidates = await anyio.to_thread.run_sync(_stale_files, self.storage_dir, cutoff)
        if not candidates:
            return 0
        by_id = {p.name.removesuffix(".audio"): p for p in candidates if p.suffix == ".audio"}
        referenced: set[str] = set()
        ids = list(by_id)
        for start in range(0, len(ids), BATCH):
            async with self.db.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(jobs.c.audio_path).where(
                            jobs.c.id.in_(ids[start : start + BATCH]), jobs.c.audio_path.is_not(None)
                        )
                    )
                ).scalars().all()
            referenced.update(rows)
        doomed = [p for p in candidates if p.suffix != ".audio" or str(p) not in referenced]
        await anyio.to_thread.run_sync(_unlink_all, doomed)
        return len(doomed)

    async def _purge_results(self, moment: datetime) -> int:
        count = 0
        while True:
            async with self.db.connect() as conn:
                ids = (
                    await conn.execute(
                        sa.select(jobs.c.id)
                        .where(jobs.c.deleted_at.is_(None), jobs.c.expires_at <= moment, jobs.c.status.in_(TERMINAL))
                        .limit(BATCH)
                    )
                ).scalars().all()
            if not ids:
                return count
            for job_id in ids:
                if await self._erase(job_id) is not None:
                    count += 1

    async def _purge_audio(self, moment: datetime) -> int:
        due = sa.or_(
            jobs.c.audio_expires_at <= moment,
            jobs.c.deleted_at.is_not(None),
            sa.and_(
                jobs.c.audio_expires_at.is_(None),
                jobs.c.status.in_(TERMINAL),
                jobs.c.finished_at + sa.func.make_interval(0, 0, 0, 0, jobs.c.audio_retention_hours) <= moment,
            ),
        )
        count = 0
        seen: set[str] = set()
        while True:
            async with self.db.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(jobs.c.id, jobs.c.audio_path)
                        .where(jobs.c.audio_path.is_not(None), jobs.c.status.in_(TERMINAL), due)
                        .limit(BATCH)
                    )
                ).all()
            fresh = [r for r in rows if r.id not in seen]
            if not fresh:
                return count
            for row in fresh:
                seen.add(row.id)
                await self.lifecycle.remove_audio(row.id, row.audio_path)
                count += 1

    async def _release_keys(self, moment: datetime) -> int:
        async with self.db.begin() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.idempotency_key.is_not(None), jobs.c.idempotency_expires_at <= moment)
                .values(idempotency_key=None, idempotency_fingerprint=None, idempotency_expires_at=None)
            )
        return int(done.rowcount)


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
