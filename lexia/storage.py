"""Where jobs' retained audio lives: a BlobStore on local disk (the default) or in S3-compatible
object storage (LEXIA_STORAGE_BACKEND=s3), so API and worker pods on different machines share it.

A job's audio has one *location* string, stored in its row: a path under LEXIA_STORAGE_DIR, or
`s3://bucket/key`. Uploads are always spooled to local disk first (a scratch area per request);
`put` then moves (disk) or uploads (S3) the finished file, and `local` gives a worker a readable
local file (the file itself on disk; a download into its scratch area from S3). boto3 is blocking,
so every S3 call runs in a worker thread; its client is thread-safe and made once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import anyio

from lexia.settings import AudioSettings

CHUNK = 1 << 20


class BlobStore(Protocol):
    """Job audio storage (see the module docstring)."""

    def location(self, tenant_id: str, job_id: str) -> str:
        """Where a job's retained audio goes."""
        ...

    async def put(self, source: Path, location: str) -> None:
        """Store a finished local file at `location`; the source is consumed (moved or uploaded)."""
        ...

    async def local(self, location: str, scratch: Path) -> Path:
        """A readable local copy: the file itself, or a download to `scratch`."""
        ...

    async def exists(self, location: str) -> bool:
        """Whether the audio is still there."""
        ...

    def read(self, location: str) -> AsyncIterator[bytes]:
        """The stored bytes in chunks."""
        ...

    async def delete(self, location: str) -> None:
        """Remove it if it is still there."""
        ...

    async def stale(self, cutoff: float) -> list[str]:
        """Locations of job audio last modified before `cutoff` (a Unix time): orphan candidates."""
        ...


class DiskStore:
    """Files under LEXIA_STORAGE_DIR: `<tenant>/<job id>.audio`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def location(self, tenant_id: str, job_id: str) -> str:
        """`<root>/<tenant>/<job id>.audio`."""
        return str(self.root / tenant_id / f"{job_id}.audio")

    async def put(self, source: Path, location: str) -> None:
        """Move the file into place (same filesystem as the spool: a rename)."""
        await anyio.to_thread.run_sync(_move, source, Path(location))

    async def local(self, location: str, scratch: Path) -> Path:
        """The stored file itself."""
        return Path(location)

    async def exists(self, location: str) -> bool:
        """Whether the file is there."""
        return await anyio.Path(location).is_file()

    async def read(self, location: str) -> AsyncIterator[bytes]:
        """The file in 1 MiB chunks."""
        async with await anyio.open_file(location, "rb") as source:
            while chunk := await source.read(CHUNK):
                yield chunk

    async def delete(self, location: str) -> None:
        """Unlink it (gone already is fine)."""
        await anyio.to_thread.run_sync(_unlink, Path(location))

    async def stale(self, cutoff: float) -> list[str]:
        """`*.audio` files of every tenant folder older than the cutoff."""
        return await anyio.to_thread.run_sync(_stale_audio, self.root, cutoff)


class S3Store:
    """Objects `<prefix><tenant>/<job id>.audio` in one bucket of an S3-compatible service."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def location(self, tenant_id: str, job_id: str) -> str:
        """`s3://<bucket>/<prefix><tenant>/<job id>.audio`."""
        return f"s3://{self.bucket}/{self.prefix}{tenant_id}/{job_id}.audio"

    def _key(self, location: str) -> str:
        head = f"s3://{self.bucket}/"
        if not location.startswith(head):
            raise ValueError(f"{location!r} is not in bucket {self.bucket!r}")
        return location[len(head) :]

    async def put(self, source: Path, location: str) -> None:
        """Upload (multipart for large files), then remove the local file."""
        await anyio.to_thread.run_sync(self.client.upload_file, str(source), self.bucket, self._key(location))
        await anyio.to_thread.run_sync(_unlink, source)

    async def local(self, location: str, scratch: Path) -> Path:
        """Download into the caller's scratch area."""
        await anyio.to_thread.run_sync(self.client.download_file, self.bucket, self._key(location), str(scratch))
        return scratch

    async def exists(self, location: str) -> bool:
        """A HEAD request."""
        try:
            await anyio.to_thread.run_sync(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(location)))
        except Exception as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def read(self, location: str) -> AsyncIterator[bytes]:
        """GET the object, its body in 1 MiB chunks."""
        reply = await anyio.to_thread.run_sync(
            lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(location))
        )
        body = reply["Body"]
        try:
            while chunk := await anyio.to_thread.run_sync(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, location: str) -> None:
        """DELETE the object (S3 answers success for a missing one too)."""
        await anyio.to_thread.run_sync(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(location)))

    async def stale(self, cutoff: float) -> list[str]:
        """Objects under the prefix last modified before the cutoff."""

        def listing() -> list[str]:
            found = []
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"].endswith(".audio") and item["LastModified"].timestamp() < cutoff:
                        found.append(f"s3://{self.bucket}/{item['Key']}")
            return found

        return await anyio.to_thread.run_sync(listing)


def open_store(settings: AudioSettings) -> BlobStore:
    """The configured store (LEXIA_STORAGE_BACKEND); S3 credentials come from the usual AWS
    variables or instance role, the endpoint from LEXIA_S3_ENDPOINT_URL (MinIO, R2, moto…)."""
    if settings.storage_backend == "disk":
        return DiskStore(settings.storage_dir)
    import boto3

    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region or None)
    return S3Store(client, settings.s3_bucket, settings.s3_prefix)


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = str((response or {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _stale_audio(root: Path, cutoff: float) -> list[str]:
    found: list[str] = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name == "incoming":
            continue
        for entry in os.scandir(folder):
            is_audio = entry.name.endswith(".audio") and entry.is_file(follow_symlinks=False)
            if is_audio and entry.stat().st_mtime < cutoff:
                found.append(entry.path)
    return found
