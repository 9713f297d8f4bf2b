"""Audio intake: stream multipart uploads to disk and fetch audio_url under the SSRF guard.

Nothing here holds a whole file in memory: bodies are written to LEXIA_STORAGE_DIR in chunks
(batched to about 1 MiB per disk write, done in a worker thread), and reception stops with 413
as soon as a size limit is passed. Every file is created through a Spool, which deletes what it
created when it closes unless the caller kept the file, so errors, cancellations and client
disconnects leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import anyio
import httpx
import multipart

from lexia.errors import AudioFetchFailed, InvalidRequest, PayloadTooLarge, UrlNotAllowed, ValidationFailed
from lexia.netguard import NetGuard, ResolveError

WRITE_BATCH = 1 << 20
MAX_REDIRECTS = 3
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 200
# Room for multipart framing and form fields on top of LEXIA_MAX_UPLOAD_BYTES when the
# declared Content-Length of a whole multipart body is checked.
MULTIPART_SLACK = 1 << 20
FILE_FIELDS = ("file", "audio")
FETCH_HEADERS = {"User-Agent": "Lexia/1.0 (audio fetch)", "Accept": "*/*", "Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class StoredAudio:
    """Audio bytes written to disk: where, how large, their SHA-256 and the client's file name."""

    path: Path
    size: int
    sha256: str
    filename: str | None = None


@dataclass(slots=True)
class FormData:
    """A received multipart body: text fields (repeatable) and at most one audio file."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    audio: StoredAudio | None = None
    audio_field: str | None = None


class Spool:
    """Creates files under a directory and removes them all on close unless kept."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory) / "incoming"
        self._owned: set[Path] = set()

    def new_path(self, suffix: str = ".part") -> Path:
        """A fresh, unique path owned by this spool (the directory is created if needed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{secrets.token_hex(12)}{suffix}"
        self._owned.add(path)
        return path

    def keep(self, path: Path) -> None:
        """Stop owning a file: it survives close (the caller moved or will remove it)."""
        self._owned.discard(path)

    def discard(self, path: Path) -> None:
        """Remove one owned file now."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._owned.discard(path)

    def close(self) -> None:
        """Remove every file still owned."""
        for path in list(self._owned):
            self.discard(path)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Sink:
    """Writes chunks to one spooled file in ~1 MiB batches off the event loop, with a size cap."""

    def __init__(self, spool: Spool, limit: int, param: str) -> None:
        self.spool = spool
        self.path = spool.new_path()
        self.limit = limit
        self.param = param
        self.size = 0
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._file: BinaryIO | None = None

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise PayloadTooLarge(
                f"The audio exceeds the upload limit of {self.limit} bytes", param=self.param, code="file_too_large"
            )
        self._hash.update(chunk)
        self._buffer += chunk
        if len(self._buffer) >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self._file is None:
            self._file = await anyio.to_thread.run_sync(open, self.path, "wb")
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            await anyio.to_thread.run_sync(self._file.write, data)

    async def finish(self, filename: str | None) -> StoredAudio:
        await self._flush()
        await self.aclose()
        return StoredAudio(self.path, self.size, self._hash.hexdigest(), filename)

    async def aclose(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            await anyio.to_thread.run_sync(handle.close)


def multipart_boundary(content_type: str) -> str:
    """The boundary of a multipart/form-data Content-Type (400 malformed_request if absent)."""
    _, options = multipart.parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data without a boundary", param=None)
    return str(boundary)


async def receive_multipart(
    chunks: AsyncIterator[bytes],
    content_type: str,
    spool: Spool,
    *,
    max_bytes: int,
    content_length: int | None = None,
    file_fields: tuple[str, ...] = FILE_FIELDS,
) -> FormData:
    """Parse a multipart body as it arrives; the audio part goes to disk, text fields to memory."""
    if content_length is not None and content_length > max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(
            f"The upload exceeds the limit of {max_bytes} bytes", param="file", code="file_too_large"
        )
    parser = multipart.PushMultipartParser(
        multipart_boundary(content_type), max_header_count=16, max_segment_count=MAX_FIELDS + 1
    )
    form = FormData()
    sink: _Sink | None = None
    text: bytearray | None = None
    name = ""
    filename: str | None = None
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            try:
                events = list(parser.parse(chunk))
            except multipart.MultipartError as exc:
                raise InvalidRequest(f"Malformed multipart body: {exc}") from None
            for event in events:
                if isinstance(event, multipart.MultipartSegment):
                    name, filename = event.name or "", event.filename
                    if name in file_fields:
                        if form.audio is not None or sink is not None:
                            raise ValidationFailed("Send exactly one audio file", param="file")
                        sink = _Sink(spool, max_bytes, "file")
                    else:
                        text = bytearray()
                elif isinstance(event, bytes | bytearray | memoryview):
                    if sink is not None:
                        await sink.write(bytes(event))
                    elif text is not None:
                        text += event
                        if len(text) > MAX_FIELD_BYTES:
                            raise PayloadTooLarge(
                                f"Form field {name!r} exceeds {MAX_FIELD_BYTES} bytes", param=name
                            )
                elif event is None:
                    if sink is not None:
                        form.audio = await sink.finish(filename)
                        form.audio_field = name
                        sink = None
                    elif text is not None:
                        try:
                            value = bytes(text).decode("utf-8")
                        except UnicodeDecodeError:
                            raise InvalidRequest(f"Form field {name!r} is not UTF-8", param=name) from None
                        form.fields.setdefault(name, []).append(value)
                        text = None
        try:
            parser.close()
        except multipart.MultipartError as exc:
            raise InvalidRequest(f"Malformed multipart body: {exc}") from None
    finally:
        if sink is not None:
            await sink.aclose()
    return form


async def fetch_url(
    url: str,
    spool: Spool,
    guard: NetGuard,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 (a total deadline for the whole download, redirects included)
    param: str = "audio_url",
    transport: httpx.AsyncBaseTransport | None = None,
) -> StoredAudio:
    """Download an audio_url to the spool under the SSRF guard (≤ 3 redirects, size and time caps)."""
    current = guard.parse(url, param=param)
    try:
        async with asyncio.timeout(timeout):
            return await _download(current, spool, guard, max_bytes=max_bytes, param=param, transport=transport)
    except TimeoutError:
        raise AudioFetchFailed(f"Downloading {param} took longer than {timeout:g} s", param=param) from None


async def _download(
    current: httpx.URL,
    spool: Spool,
    guard: NetGuard,
    *,
    max_bytes: int,
    param: str,
    transport: httpx.AsyncBaseTransport | None,
) -> StoredAudio:
    async with httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(30.0)
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                target = await guard.vet(current, param=param)
            except ResolveError as exc:
                raise AudioFetchFailed(f"{param}: {exc}", param=param) from None
            request = guard.build_request(
                client, "GET", target, headers={**FETCH_HEADERS}
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise AudioFetchFailed(
                    f"{param}: connection error ({type(exc).__name__})", param=param
                ) from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if hop == MAX_REDIRECTS or not location:
                        raise AudioFetchFailed(
                            f"{param}: more than {MAX_REDIRECTS} redirects" if location
                            else f"{param}: redirect without a Location",
                            param=param,
                        )
                    try:
                        current = guard.parse(str(current.join(location)), param=param)
                    except ValidationFailed:
                        raise UrlNotAllowed(
                            f"{param} redirected to a URL that is not allowed", param=param
                        ) from None
                    continue
                if not response.is_success:
                    raise AudioFetchFailed(
                        f"{param}: the server answered HTTP {response.status_code}", param=param
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise PayloadTooLarge(
                        f"The audio at {param} exceeds the limit of {max_bytes} bytes",
                        param=param,
                        code="file_too_large",
                    )
                sink = _Sink(spool, max_bytes, param)
                try:
                    async for chunk in response.aiter_bytes():
                        await sink.write(chunk)
                    return await sink.finish(None)
                finally:
                    await sink.aclose()
            except httpx.HTTPError as exc:
                raise AudioFetchFailed(
                    f"{param}: download failed ({type(exc).__name__})", param=param
                ) from None
            finally:
                await response.aclose()
    raise AudioFetchFailed(f"{param}: too many redirects", param=param)  # pragma: no cover
