"""Lexia as a daemon under supervisord (lexia.supervise: make daemon|stop|restart|status|logs), with
the real API server and Dramatiq worker against the test database and Redis.

A killed API is started again and ready; a stop lets a running sync request finish and hands a
running job back (the next start finishes it); after a stop nothing of Lexia is left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BASE_ENV, bearer
from tests.harness import make_key, services_for, wait_for, wait_ready
from tests.jobs_support import JOB_ENV, job_settings, sql, wav_bytes
from tests.test_stop import _free_port

ROOT = Path(__file__).resolve().parents[1]
GRACE = 4.0


class Daemon:
    def __init__(self, data: Path, env: dict[str, str], port: int) -> None:
        self.data, self.env, self.base = data, env, f"http://127.0.0.1:{port}"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lexia.supervise", command], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=90, check=False)

    def pid(self, program: str) -> int:
        done = subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c",
                               str(self.data / "run" / "supervisord.conf"), "pid", program],
                              capture_output=True, text=True, timeout=30, check=False)
        return int(done.stdout.strip() or 0)

    def ours(self) -> list[int]:
        """Live processes started from this deployment's configuration or its programs."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if str(self.data).encode() in cmd or f"LEXIA_DATA_DIR={self.data}".encode() in environ:
                found.append(int(entry))
        return found

    async def ready(self) -> None:
        await wait_ready(self.base)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Daemon] = []

    def make(**overrides: str) -> Daemon:
        port = _free_port()
        data = tmp_path / "data"
        env = {**os.environ, **BASE_ENV, **JOB_ENV, "LEXIA_PORT": str(port), "LEXIA_DATA_DIR": str(data),
               "LEXIA_STORAGE_DIR": str(tmp_path / "audio"), "LEXIA_SHUTDOWN_GRACE_SECONDS": str(GRACE),
               "LEXIA_LOG_LEVEL": "WARNING", **overrides}
        started.append(Daemon(data, env, port))
        return started[-1]

    yield make
    for one in started:
        one.run("stop")
        for pid in one.ours():
            os.kill(pid, signal.SIGKILL)


async def test_a_killed_api_comes_back_and_stop_leaves_nothing(daemon: Callable[..., Any]) -> None:
    lexia = daemon()
    assert lexia.run("start").returncode == 0
    await lexia.ready()
    assert lexia.run("start").stdout.startswith("lexia: already running")
    async def running() -> bool:
        status = lexia.run("status")
        return status.returncode == 0 and status.stdout.count("RUNNING") == 2  # api and worker

    await wait_for(running, timeout=30, every=0.5)
    old = lexia.pid("api")
    os.kill(old, signal.SIGKILL)
    started = time.monotonic()

    async def back() -> bool:
        return lexia.pid("api") not in (0, old)

    await wait_for(back, timeout=30, every=0.2)
    await lexia.ready()
    print(f"\nAPI killed -> ready again in {time.monotonic() - started:.1f} s")
    assert (lexia.data / "logs" / "api.log").exists() and (lexia.data / "logs" / "worker.log").exists()
    assert lexia.run("stop").returncode == 0
    assert lexia.ours() == []  # supervisord, the API, Dramatiq and its worker process: all gone
    assert lexia.run("status").returncode == 3


async def test_a_stop_finishes_a_sync_request_and_hands_a_running_job_back(
    daemon: Callable[..., Any], tmp_path: Path
) -> None:
    lexia = daemon(LEXIA_FAKE_ENGINE_DELAY="0.5")
    assert lexia.run("start").returncode == 0
    await lexia.ready()
    async with services_for(job_settings(tmp_path)) as services:
        _, key = await make_key(services)
    async with httpx.AsyncClient(base_url=lexia.base, timeout=60) as client:
        job_files = {"file": ("a.wav", wav_bytes(30.0, tmp_path / "a.wav"), "audio/wav")}  # 15 s: past the grace
        job = (await client.post("/v1/transcriptions", files=job_files, headers=bearer(key))).json()

        async def running() -> bool:
            return sql("SELECT status FROM jobs WHERE id = %s", job["id"]) == [("processing",)]

        await wait_for(running, timeout=30)
        sync_files = {"file": ("b.wav", wav_bytes(4.0, tmp_path / "b.wav"), "audio/wav")}  # 2 s: inside it
        request = asyncio.create_task(client.post("/v1/transcriptions/sync", files=sync_files, headers=bearer(key)))
        await asyncio.sleep(0.5)
        stopped = await asyncio.to_thread(lexia.run, "stop")
        response = await request
    assert stopped.returncode == 0 and lexia.ours() == []
    assert response.status_code == 200 and response.json()["status"] == "completed"
    status, lapsed = sql("SELECT status, lease_expires_at <= now() FROM jobs WHERE id = %s", job["id"])[0]
    assert (status, lapsed) == ("processing", True)  # handed back, not lost
    lexia.env["LEXIA_FAKE_ENGINE_DELAY"] = "0"
    assert lexia.run("restart").returncode == 0  # `git pull && make restart`
    await lexia.ready()
    async with httpx.AsyncClient(base_url=lexia.base, timeout=30) as client:

        async def completed() -> bool:
            body = (await client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))).json()
            return body["status"] == "completed"

        await wait_for(completed, timeout=30)
