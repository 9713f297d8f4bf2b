"""Audio intake for every audio route and job: request bodies to disk, audio_url downloads, decoding.

The HTTP layer hands over the body as a stream of bytes; this service streams uploads into a
Spool (one per request, removed when it closes unless a file is kept), fetches URLs behind the
SSRF guard, probes and decodes in threads, and moves kept uploads into job storage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx

from lexia.audio import AudioProbe, decode, probe
from lexia.engines.base import Audio
from lexia.intake import FormData, Spool, StoredAudio, fetch_url, receive_multipart
from lexia.netguard import NetGuard, ResolveError
from lexia.settings import AudioSettings
from lexia.storage import BlobStore, DiskStore


class AudioIntake:
    """Receives, fetches, stores and decodes audio under the LEXIA_* audio limits."""

    def __init__(
        self,
        settings: AudioSettings,
        guard: NetGuard,
        *,
        store: BlobStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.store: BlobStore = store or DiskStore(settings.storage_dir)
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

    def job_location(self, tenant_id: str, job_id: str) -> str:
        """Where a job's retained audio lives in the store."""
        return self.store.location(tenant_id, job_id)

    async def keep(self, spool: Spool, source: Path, location: str) -> None:
        """Store a spooled file at `location` (it then outlives the spool)."""
        await self.store.put(source, location)
        spool.keep(source)

    async def remove(self, location: str) -> None:
        """Delete stored audio if it is still there."""
        await self.store.delete(location)

    async def decode_stored(self, spool: Spool, location: str, *, max_seconds: float, param: str) -> Audio:
        """Decode a job's stored audio (fetched into the spool first when the store is remote)."""
        path = await self.store.local(location, spool.new_path(".audio"))
        return await self.decode(path, max_seconds=max_seconds, param=param)
