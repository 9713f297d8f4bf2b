"""Intake over a real socket and a real HTTP server: streamed uploads, 413 cut-offs, disconnects,
and audio_url downloads behind the SSRF guard (allowlist, redirects, size and time limits)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psycopg
import pytest

from lexia.db.migrations import libpq_dsn
from tests.conftest import TEST_DB_URL, bearer
from tests.harness import AppFactory, TestApp
from tests.stt.httpserver import LocalServer, body, endless, redirect, serve
from tests.stt.media import wav
from tests.test_auth import assert_error

BOUNDARY = "lexiaboundary"


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[LocalServer]:
    server, stop = serve()
    sample = wav(tmp_path / "remote.wav", 4.0).read_bytes()
    server.routes.update(
        {
            "/a.wav": body(sample),
            "/hop": redirect("/a.wav"),
            "/to-private": redirect("http://10.0.0.1/a.wav"),
            "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
            "/to-ftp": redirect("ftp://example.com/a.wav"),
            "/loop1": redirect("/loop2"),
            "/loop2": redirect("/loop3"),
            "/loop3": redirect("/loop4"),
            "/loop4": redirect("/a.wav"),
            "/text": body(b"plain text, not audio" * 10, "text/plain"),
            "/declared-big": body(b"\0" * 3_000_000),
            "/big": endless(server, "big", 64 * 1024 * 1024),
        }
    )
    yield server
    stop()


@pytest.fixture
async def allowing(serve_app: AppFactory) -> AsyncIterator[tuple[TestApp, str]]:
    api = await serve_app(
        LEXIA_SSRF_ALLOWLIST="127.0.0.1", LEXIA_MAX_UPLOAD_BYTES="2000000", LEXIA_AUDIO_FETCH_TIMEOUT_SECONDS="2"
    )
    _, secret = await api.make_key("stt")
    yield api, secret
    assert api.leftovers() == []


async def fetch(api: TestApp, secret: str, url: str) -> object:
    return await api.client.post("/v1/transcriptions/sync", json={"audio_url": url}, headers=bearer(secret))


async def test_allowlisted_url_is_downloaded_and_transcribed(allowing: tuple[TestApp, str], remote: LocalServer) -> None:
    api, secret = allowing
    response = await fetch(api, secret, remote.url("/hop"))
    assert response.status_code == 200, response.text
    transcript = response.json()
    assert transcript["audio_url"] == remote.url("/hop") and transcript["audio_filename"] is None
    assert transcript["audio_duration"] == 4.0 and transcript["words"]
    assert remote.requests == ["/hop", "/a.wav"]


async def test_loopback_is_refused_without_allowlist(serve_app: AppFactory, remote: LocalServer) -> None:
    api = await serve_app()
    _, secret = await api.make_key("stt")
    error = assert_error(await fetch(api, secret, remote.url("/a.wav")), 422, "url_not_allowed", "audio_url")
    assert "LEXIA_SSRF_ALLOWLIST" in error["message"]
    assert remote.requests == []  # refused before any connection


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata", "/to-ftp"])
async def test_redirect_to_a_forbidden_target_is_refused(
    allowing: tuple[TestApp, str], remote: LocalServer, path: str
) -> None:
    api, secret = allowing
    assert_error(await fetch(api, secret, remote.url(path)), 422, "url_not_allowed", "audio_url")
    assert remote.requests == [path]


async def test_more_than_three_redirects_fail(allowing: tuple[TestApp, str], remote: LocalServer) -> None:
    api, secret = allowing
    error = assert_error(await fetch(api, secret, remote.url("/loop1")), 422, "audio_fetch_failed", "audio_url")
    assert "redirects" in error["message"]
    assert remote.requests == ["/loop1", "/loop2", "/loop3", "/loop4"]


async def test_remote_errors_are_audio_fetch_failed(allowing: tuple[TestApp, str], remote: LocalServer) -> None:
    api, secret = allowing
    error = assert_error(await fetch(api, secret, remote.url("/missing")), 422, "audio_fetch_failed", "audio_url")
    assert "HTTP 404" in error["message"]
    closed_port = remote.url("/a.wav").replace(str(remote.port), "1")
    assert_error(await fetch(api, secret, closed_port), 422, "audio_fetch_failed", "audio_url")
    assert_error(await fetch(api, secret, remote.url("/text")), 415, "audio_decode_failed", "audio_url")


async def test_oversize_download_is_cut_at_the_limit(allowing: tuple[TestApp, str], remote: LocalServer) -> None:
    api, secret = allowing
    error = assert_error(await fetch(api, secret, remote.url("/big")), 413, "file_too_large", "audio_url")
    assert "2000000" in error["message"]
    for _ in range(100):
        if "big" in remote.sent:
            break
        await asyncio.sleep(0.02)
    assert remote.sent["big"] < 32 * 1024 * 1024  # the download stopped long before the end
    assert_error(await fetch(api, secret, remote.url("/declared-big")), 413, "file_too_large", "audio_url")


async def test_slow_download_times_out(allowing: tuple[TestApp, str], remote: LocalServer) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        time.sleep(3)

    remote.routes["/slow"] = slow
    api, secret = allowing
    started = time.monotonic()
    error = assert_error(await fetch(api, secret, remote.url("/slow")), 422, "audio_fetch_failed", "audio_url")
    assert "2 s" in error["message"] and time.monotonic() - started < 2.9


# -- uploads on a raw socket -------------------------------------------------------------------


def _head(secret: str, length: str | None, chunked: bool = False) -> bytes:
    lines = [
        "POST /v1/transcriptions/sync HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {secret}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PART_HEAD = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
    "Content-Type: audio/wav\r\n\r\n"
).encode()


async def _connect(api: TestApp) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = api.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1]), head


async def test_declared_oversize_upload_is_refused_before_the_body(serve_app: AppFactory) -> None:
    api = await serve_app(LEXIA_MAX_UPLOAD_BYTES="1000000")
    _, secret = await api.make_key("stt")
    reader, writer = await _connect(api)
    writer.write(_head(secret, str(50 * 1024 * 1024)) + PART_HEAD + b"\0" * 1000)
    await writer.drain()
    status, _ = await _status(reader)  # answered although 50 MB were announced and 1 kB sent
    assert status == 413
    rest = await asyncio.wait_for(reader.read(4096), 5)
    assert b"file_too_large" in rest
    writer.close()
    assert api.leftovers() == []


async def test_streamed_upload_is_cut_as_soon_as_it_passes_the_limit(serve_app: AppFactory) -> None:
    api = await serve_app(LEXIA_MAX_UPLOAD_BYTES="1000000")
    _, secret = await api.make_key("stt")
    reader, writer = await _connect(api)
    writer.write(_head(secret, None, chunked=True))
    sent = 0
    block = b"\0" * 65536
    status = None
    chunk = PART_HEAD + block
    while sent < 64 * 1024 * 1024:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        try:
            await asyncio.wait_for(writer.drain(), 2)
        except (ConnectionError, TimeoutError):
            break
        sent += len(chunk)
        chunk = block
        if not reader.at_eof() and reader._buffer:  # type: ignore[attr-defined]  # the answer came early
            break
    status, _ = await _status(reader)
    assert status == 413 and sent < 8 * 1024 * 1024
    writer.close()
    for _ in range(50):
        if not api.leftovers():
            break
        await asyncio.sleep(0.02)
    assert api.leftovers() == []


async def test_client_disconnect_mid_upload_leaves_nothing(serve_app: AppFactory) -> None:
    api = await serve_app()
    _, secret = await api.make_key("stt")
    _, writer = await _connect(api)
    writer.write(_head(secret, str(5_000_000)) + PART_HEAD + b"\0" * 2_000_000)
    await writer.drain()
    for _ in range(100):  # wait until the server has spooled part of it
        await asyncio.sleep(0.02)
        if api.leftovers():
            break
    assert api.leftovers(), "the upload was not being spooled"
    writer.transport.abort()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not api.leftovers():
            break
    assert api.leftovers() == []
    with psycopg.connect(libpq_dsn(TEST_DB_URL)) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    healthy = await api.client.get("/health")
    assert healthy.status_code == 200
