"""Every stop path ends everything within the grace period: bin/start (lexia.launcher) with the real
API server and a real `dramatiq` worker, against the test database and Redis.

Ctrl-C (SIGINT to the foreground group), SIGTERM to the launcher alone and SIGTERM to its group
all stop both processes and leave nothing behind; a job running at the stop is handed back and
finished by the next worker, never lost; a sync request cut by the stop is answered 503 in the
error envelope; a killed worker is started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BASE_ENV, bearer
from tests.harness import make_key, services_for, wait_for, wait_ready
from tests.jobs_support import JOB_ENV, job_settings, sql, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
GRACE = 3.0
# The launcher's own margin after the grace period, and process start-up on a busy 2-core machine.
STOP_BUDGET = GRACE + 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process, None once it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[3]))


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def in_sessions(sessions: set[int]) -> list[int]:
    """Live processes of these sessions."""
    return [pid for pid in _all_pids() if (info := _stat(pid)) is not None and info[1] in sessions]


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    base: str

    def children(self) -> set[int]:
        """The launcher's children: each leads a session of its own (API, worker)."""
        return {pid for pid in _all_pids() if (info := _stat(pid)) is not None and info[0] == self.proc.pid}

    async def stop(self, how: str, sig: signal.Signals) -> float:
        """Send `sig` to the launcher (`pid`) or its group (`group`); seconds until all is gone."""
        sessions = self.children()
        started = time.monotonic()
        if how == "group":
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        await asyncio.to_thread(self.proc.wait, STOP_BUDGET + 10)
        while in_sessions(sessions) and time.monotonic() - started < STOP_BUDGET + 10:
            await asyncio.sleep(0.1)
        return time.monotonic() - started


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Launched] = []

    async def start(**overrides: str) -> Launched:
        port = _free_port()
        env = {**os.environ, **BASE_ENV, **JOB_ENV, "LEXIA_PORT": str(port), "LEXIA_STORAGE_DIR": str(tmp_path / "s"),
               "LEXIA_SHUTDOWN_GRACE_SECONDS": str(GRACE), "LEXIA_LOG_LEVEL": "WARNING", **overrides}
        proc = subprocess.Popen([sys.executable, "-m", "lexia.launcher"], cwd=ROOT, env=env, start_new_session=True)
        launched = Launched(proc, f"http://127.0.0.1:{port}")
        started.append(launched)
        await wait_ready(launched.base)
        return launched

    yield start
    for launched in started:
        sessions = launched.children()
        if launched.proc.poll() is None:
            os.killpg(launched.proc.pid, signal.SIGKILL)
        for pid in in_sessions(sessions):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("how", "sig"), [("group", signal.SIGINT), ("pid", signal.SIGTERM), ("group", signal.SIGTERM)],
                         ids=["ctrl-c", "sigterm-to-the-launcher", "sigterm-to-the-group"])
async def test_each_stop_path_ends_everything_in_time(launch: Callable[..., Any], how: str, sig: signal.Signals) -> None:
    launched = await launch()
    sessions = launched.children()
    assert len(sessions) == 2 and len(in_sessions(sessions)) >= 3  # the API, dramatiq and its worker process
    took = await launched.stop(how, sig)
    assert launched.proc.returncode == 0
    assert in_sessions(sessions) == []  # no orphan
    assert took < STOP_BUDGET, took


async def test_a_job_running_at_the_stop_is_handed_back_and_finished_by_the_next_worker(
    launch: Callable[..., Any], tmp_path: Path
) -> None:
    launched = await launch(LEXIA_FAKE_ENGINE_DELAY="1.0")  # 12 s of audio: far longer than the grace
    async with services_for(job_settings(tmp_path)) as services:
        _, key = await make_key(services)
    async with httpx.AsyncClient(base_url=launched.base, timeout=30) as client:
        files = {"file": ("a.wav", wav_bytes(12.0, tmp_path / "a.wav"), "audio/wav")}
        job = (await client.post("/v1/transcriptions", files=files, headers=bearer(key))).json()

        async def running() -> bool:
            return sql("SELECT status FROM jobs WHERE id = %s", job["id"]) == [("processing",)]

        await wait_for(running, timeout=30)
        assert await launched.stop("pid", signal.SIGTERM) < STOP_BUDGET
    status, lapsed = sql("SELECT status, lease_expires_at <= now() FROM jobs WHERE id = %s", job["id"])[0]
    assert (status, lapsed) == ("processing", True)  # handed back: its lease released at once
    again = await launch(LEXIA_FAKE_ENGINE_DELAY="0")
    async with httpx.AsyncClient(base_url=again.base, timeout=30) as client:

        async def completed() -> bool:
            body = (await client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))).json()
            return body["status"] == "completed"

        await wait_for(completed, timeout=30)
    assert sql("SELECT attempts FROM jobs WHERE id = %s", job["id"]) == [(2,)]


async def test_a_sync_request_cut_by_the_stop_is_answered_503_in_the_envelope(
    launch: Callable[..., Any], tmp_path: Path
) -> None:
    launched = await launch(LEXIA_FAKE_ENGINE_DELAY="1.0")
    async with services_for(job_settings(tmp_path)) as services:
        _, key = await make_key(services)
    async with httpx.AsyncClient(base_url=launched.base, timeout=60) as client:
        files = {"file": ("a.wav", wav_bytes(30.0, tmp_path / "a.wav"), "audio/wav")}
        request = asyncio.create_task(client.post("/v1/transcriptions/sync", files=files, headers=bearer(key)))

        async def running() -> bool:
            return sql("SELECT status FROM jobs") == [("processing",)]

        await wait_for(running, timeout=30)
        started = time.monotonic()
        launched.proc.send_signal(signal.SIGTERM)
        response = await request
    assert time.monotonic() - started < GRACE + 2
    assert response.status_code == 503 and response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert error["type"] == "server_error" and "shutting down" in error["message"]
    await asyncio.to_thread(launched.proc.wait, STOP_BUDGET)
    assert sql("SELECT status, error_code FROM jobs") == [("error", "internal_error")]


async def test_a_killed_worker_is_started_again(launch: Callable[..., Any], tmp_path: Path) -> None:
    launched = await launch()
    worker_session = next(pid for pid in launched.children() if b"dramatiq" in Path(f"/proc/{pid}/cmdline").read_bytes())
    child = next(pid for pid in in_sessions({worker_session}) if pid != worker_session)
    os.kill(child, signal.SIGKILL)  # the process running the actors

    async def restarted() -> bool:
        return any(b"dramatiq" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in launched.children()
                   if pid != worker_session)

    await wait_for(restarted, timeout=30, every=0.2)
    async with services_for(job_settings(tmp_path)) as services:
        _, key = await make_key(services)
    async with httpx.AsyncClient(base_url=launched.base, timeout=30) as client:
        files = {"file": ("a.wav", wav_bytes(1.0, tmp_path / "a.wav"), "audio/wav")}
        job = (await client.post("/v1/transcriptions", files=files, headers=bearer(key))).json()

        async def completed() -> bool:
            return (await client.get(f"/v1/jobs/{job['id']}", headers=bearer(key))).json()["status"] == "completed"

        await wait_for(completed, timeout=30)
    await launched.stop("pid", signal.SIGTERM)
    assert launched.proc.returncode == 0


async def test_a_worker_run_alone_stops_on_ctrl_c_without_orphans(tmp_path: Path) -> None:
    """make worker: Dramatiq signalled through its whole group would get the signal twice (its main
    process passes it on) and hang; the launcher's --worker-only mode sends it exactly one."""
    env = {**os.environ, **BASE_ENV, **JOB_ENV, "LEXIA_STORAGE_DIR": str(tmp_path / "s"),
           "LEXIA_SHUTDOWN_GRACE_SECONDS": str(GRACE), "LEXIA_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "lexia.launcher", "--worker-only", "--queues", "webhooks"],
                            cwd=ROOT, env=env, start_new_session=True)
    launched = Launched(proc, "")
    try:

        async def worker_up() -> bool:
            return len(in_sessions(launched.children())) >= 2  # dramatiq and its worker process

        await wait_for(worker_up, timeout=30, every=0.2)
        sessions = launched.children()
        command = next(Path(f"/proc/{pid}/cmdline").read_bytes() for pid in sessions)
        assert b"--queues\x00webhooks" in command
        took = await launched.stop("group", signal.SIGINT)
        assert proc.returncode == 0 and took < STOP_BUDGET, took
        assert in_sessions(sessions) == []  # no orphan
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
