"""Audio intake for every audio route and job: request bodies to disk, audio_url downloads, decoding.

The HTTP layer hands over the body as a stream of bytes; this service streams uploads into a
Spool (one per request, removed when it closes unless a file is kept), fetches URLs behind the
SSRF guard, probes and decodes in threads, and moves kept uploads into job storage.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx

from lexia.audio import AudioProbe, decode, probe
from lexia.engines.base import Audio
from lexia.intake import FormData, Spool, StoredAudio, fetch_url, receive_multipart
from lexia.netguard import NetGuard, ResolveError
from lexia.settings import AudioSettings


class AudioIntake:
    """Receives, fetches, stores and decodes audio under the LEXIA_* audio limits."""

    def __init__(
        self, settings: AudioSettings, guard: NetGuard, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.guard = guard
        self._transport = transport

    def spool(self) -> Spool:
        """A scratch area for one request or attempt (use as `async with`)."""
        return Spool(self.settings.storage_dir)

    async def receive(
        self, spool: Spool, chunks: AsyncIterator[bytes], *, content_type: str, content_length: int | None
    ) -> FormData:
        """A multipart body as it arrives: the audio part to the spool (413 past the limit), fields in memory."""
        return await receive_multipart(
            chunks, content_type, spool, max_bytes=self.settings.max_upload_bytes, content_length=content_length
        )

    async def fetch(self, spool: Spool, url: str, *, param: str = "audio_url") -> StoredAudio:
        """Download an audio_url into the spool under the SSRF guard."""
        return await fetch_url(
            url, spool, self.guard, max_bytes=self.settings.max_upload_bytes,
            timeout=self.settings.fetch_timeout_seconds, param=param, transport=self._transport,
        )

    async def vet_url(self, url: str, *, param: str) -> None:
        """The SSRF check at submit time (a name that does not resolve yet is checked again when fetched)."""
        with contextlib.suppress(ResolveError):
            await self.guard.vet(url, param=param)

    async def probe(self, path: Path, *, max_seconds: float, param: str) -> AudioProbe:
        """Container, stream and duration checks without decoding (in a thread)."""
        return await anyio.to_thread.run_sync(lambda: probe(path, max_seconds=max_seconds, param=param))

    async def decode(self, path: str | Path, *, max_seconds: float, param: str) -> Audio:
        """16 kHz mono float32 samples (in a thread)."""
        return await decode(path, max_seconds=max_seconds, param=param)

    def job_path(self, tenant_id: str, job_id: str) -> Path:
        """Where a job's retained audio lives."""
        return Path(self.settings.storage_dir) / tenant_id / f"{job_id}.audio"

    async def keep(self, spool: Spool, source: Path, target: Path) -> None:
        """Move a spooled file to `target` (it then outlives the spool)."""
        await anyio.to_thread.run_sync(_move, source, target)
        spool.keep(source)

    async def remove(self, path: str | Path) -> None:
        """Delete a file if it is still there."""
        await anyio.to_thread.run_sync(_unlink, Path(path))


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
