"""Scale-out on one machine: two API servers and two Dramatiq workers (separate processes, as on
separate pods) sharing one PostgreSQL, one Redis and one audio store — a shared directory, or an
S3-compatible server (moto) with every process on a local directory of its own, as on machines
that share nothing else.

Rate limits and idempotency hold across the APIs, every job is processed exactly once, every
webhook is delivered exactly once, and audio uploaded to one API is transcribed by whichever
worker claims it — both workers take part.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASE_ENV, bearer
from tests.harness import make_key, services_for, wait_for, wait_ready
from tests.jobs_support import JOB_ENV, job_settings, receiver, sql, wav_bytes
from tests.test_stop import _free_port
from tests.test_storage import S3_ENV, bucket, s3_server  # noqa: F401 (s3_server: a fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["shared-dir", "s3"])
def topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Base URLs of two APIs; two workers run beside them. Every process is stopped afterwards."""
    env = {**os.environ, **BASE_ENV, **JOB_ENV, "LEXIA_STORAGE_DIR": str(tmp_path / "storage"),
           "LEXIA_SHUTDOWN_GRACE_SECONDS": "2", "LEXIA_LOG_LEVEL": "WARNING", "LEXIA_FAKE_ENGINE_DELAY": "0.05"}
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_server")
        bucket(endpoint, "topology")
        env |= {**S3_ENV, "LEXIA_STORAGE_BACKEND": "s3", "LEXIA_S3_BUCKET": "topology",
                "LEXIA_S3_ENDPOINT_URL": endpoint, "LEXIA_S3_REGION": "us-east-1"}
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    procs, bases = [], []
    for i in range(2):
        port = _free_port()
        bases.append(f"http://127.0.0.1:{port}")
        own = {"LEXIA_STORAGE_DIR": str(tmp_path / f"local-{i}")} if request.param == "s3" else {}
        procs.append(subprocess.Popen([sys.executable, "-m", "lexia.serve"], cwd=ROOT,
                                      env={**env, **own, "LEXIA_PORT": str(port)}, start_new_session=True))
        own = {"LEXIA_STORAGE_DIR": str(tmp_path / f"worker-{i}")} if request.param == "s3" else {}
        procs.append(subprocess.Popen([dramatiq, "lexia.worker.actors", "--processes", "1", "--threads", "2"],
                                      cwd=ROOT, env={**env, **own}, start_new_session=True))
    try:
        yield bases
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # to the leader only: Dramatiq passes it on to its worker process
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group


async def test_two_apis_and_two_workers_share_limits_idempotency_jobs_and_webhooks(
    topology: list[str], tmp_path: Path
) -> None:
    for base in topology:
        await wait_ready(base)
    async with services_for(job_settings(tmp_path)) as services:
        _, key = await make_key(services)
        _, limited = await make_key(services, name="limited", limits={"requests_per_minute": 6})
    clients = [httpx.AsyncClient(base_url=base, timeout=30) for base in topology]
    try:
        # A per-key rate limit is one budget, whichever API answers.
        codes = [(await clients[i % 2].get("/v1/models", headers=bearer(limited))).status_code for i in range(10)]
        assert codes.count(200) == 6 and codes[6:] == [429] * 4

        # An Idempotency-Key replayed on the other API answers the same job.
        audio = wav_bytes(1.0, tmp_path / "a.wav")
        first, again = [
            await client.post("/v1/transcriptions", files={"file": ("a.wav", audio, "audio/wav")},
                              headers={**bearer(key), "Idempotency-Key": "same-upload"})
            for client in clients
        ]
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]

        with receiver() as hooks:
            jobs = [first.json()["id"]]
            for i in range(15):
                response = await clients[i % 2].post(
                    "/v1/transcriptions", files={"file": ("a.wav", audio, "audio/wav")},
                    data={"webhook_url": hooks.url}, headers=bearer(key),
                )
                assert response.status_code == 202, response.text
                jobs.append(response.json()["id"])

            async def all_done() -> bool:
                rows = sql("SELECT count(*) FROM jobs WHERE status = 'completed'")
                return rows[0][0] == len(jobs)

            await wait_for(all_done, timeout=60, every=0.2)

            async def delivered() -> bool:
                return len(hooks.events()) >= 15

            await wait_for(delivered, timeout=30, every=0.2)
            await asyncio.sleep(1.0)  # a duplicate delivery would arrive now
            events = hooks.events()
        assert sorted(e["transcript_id"] for e in events) == sorted(jobs[1:])  # each delivered exactly once
        rows = sql("SELECT id, attempts, worker FROM jobs")
        assert sorted(r[0] for r in rows) == sorted(jobs) and {r[1] for r in rows} == {1}  # each processed once
        assert len({r[2] for r in rows}) == 2  # both workers took jobs from both APIs
    finally:
        for client in clients:
            await client.aclose()
