"""Support for the job, worker and webhook tests: a served app, a Dramatiq worker, webhook receivers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import numpy as np
import psycopg
import soundfile as sf
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO

from lexia.db.migrations import libpq_dsn
from lexia.engines.base import Engines
from lexia.queue import DramatiqQueue
from lexia.settings import Settings
from tests.conftest import BASE_ENV, TEST_DB_URL, make_settings
from tests.harness import wait_for

JOB_ENV = {
    "LEXIA_JOB_LEASE_SECONDS": "2",
    "LEXIA_JOB_PROGRESS_SECONDS": "0.1",
    "LEXIA_JOB_SWEEP_SECONDS": "0.3",
    "LEXIA_JOB_REQUEUE_SECONDS": "1",
    "LEXIA_WEBHOOK_RETRY_SCHEDULE": "0.2s,0.2s,0.2s",
    "LEXIA_WEBHOOK_TIMEOUT_SECONDS": "2",
    "LEXIA_SSRF_ALLOWLIST": "127.0.0.1",
}


def job_settings(tmp: Path, **overrides: str) -> Settings:
    """Test settings with short leases and retry schedules and storage under `tmp`."""
    return make_settings(**{"LEXIA_STORAGE_DIR": str(tmp / "storage"), **JOB_ENV, **overrides})


def wav_bytes(seconds: float, path: Path) -> bytes:
    """A 16 kHz mono 16-bit WAV of a modulated tone (the fake engines only need a duration)."""
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, subtype="PCM_16", format="WAV")
    return path.read_bytes()


def sql(query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run SQL against the test database (autocommit) and return the rows."""
    with psycopg.connect(libpq_dsn(TEST_DB_URL), autocommit=True) as conn:
        cursor = conn.execute(query, args)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_module() -> Any:
    """Import lexia.worker.actors (its import-time broker set-up reads the environment)."""
    with patched_env(dict(BASE_ENV)):
        import lexia.worker.actors as actors
    return actors


# -- a Dramatiq worker on a StubBroker ------------------------------------------------------


@dataclass
class StubWorker:
    """A StubBroker with the three actors and a real Dramatiq Worker consuming it."""

    broker: StubBroker
    runtime: Any
    worker: dramatiq.Worker
    queue: DramatiqQueue

    def stop(self) -> None:
        self.worker.stop(timeout=10_000)
        self.broker.close()

    async def drained(self, queue: str = "transcription", *, timeout: float = 15.0) -> None:
        """Wait until the worker has processed every message sent to `queue` (acknowledged, not merely
        received); raises dramatiq's QueueJoinTimeout if nothing consumes them (a stopped worker)."""
        await asyncio.to_thread(self.broker.join, queue, timeout=int(timeout * 1000))


@contextlib.contextmanager
def stub_worker(settings: Settings, *, engines: Engines | None = None, threads: int = 4) -> Iterator[StubWorker]:
    """Run the real actors in a real Worker on a StubBroker; the runtime opens once, at boot."""
    actors = worker_module()
    from lexia.worker.runtime import RuntimeMiddleware, WorkerRuntime

    broker = StubBroker()
    queue = DramatiqQueue(broker)
    runtime = WorkerRuntime(settings, queue=queue, engines=engines)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(RuntimeMiddleware(runtime))
    actors.declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    stub = StubWorker(broker, runtime, worker, queue)
    try:
        yield stub
    finally:
        stub.stop()


# -- webhook receivers ----------------------------------------------------------------------


@dataclass
class Receiver:
    """A local HTTP server that records webhook POSTs and answers from a script of status codes."""

    port: int = 0
    codes: list[int] = field(default_factory=list)
    default: int = 200
    delay: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]


@contextlib.contextmanager
def receiver(codes: list[int] | None = None, default: int = 200, delay: float = 0.0) -> Iterator[Receiver]:
    """Start a receiver on 127.0.0.1 (random port) for the duration of a block."""
    state = Receiver(codes=list(codes or []), default=default, delay=delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with state.lock:
                state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = state.codes.pop(0) if state.codes else state.default
            if state.delay:
                time.sleep(state.delay)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            if 300 <= code < 400:
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- polling --------------------------------------------------------------------------------


async def wait_status(client: httpx.AsyncClient, path: str, headers: dict[str, str], statuses: tuple[str, ...],
                      timeout: float = 20) -> dict[str, Any]:
    """Poll a resource until its status is one of `statuses`."""

    async def check() -> dict[str, Any] | None:
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in statuses else None

    return await wait_for(check, timeout=timeout)  # type: ignore[no-any-return]
