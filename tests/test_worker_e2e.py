"""Nothing lost when a worker dies: real Redis broker, real `dramatiq lexia.worker.actors` processes.

20 jobs are submitted over HTTP; while they run on two job workers, the process holding one of
them is killed with SIGKILL and a new worker is started. Every job must reach `completed` with
its result written once (one usage event, one delivery), and a webhook receiver verifying every
signature with the `standardwebhooks` package must see exactly one completion event per job.
Deliveries run on their own worker (`--queues webhooks`), so the kill never interrupts a POST
in flight (a delivery interrupted mid-POST is retried: at-least-once, de-duplicated on webhook-id).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import BASE_ENV, bearer
from tests.harness import AppFactory
from tests.jobs_support import JOB_ENV, job_settings, sql, wait_for, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))
JOBS = 20
DELAY = "0.7"  # seconds of fake engine time per audio second: a 3 s clip takes about 2 s


class VerifyingReceiver:
    """Counts completion events per job; every request must carry a valid Standard Webhooks signature."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.events: Counter[str] = Counter()
        self.ids: dict[str, set[str]] = {}
        self.rejected = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    payload = receiver.webhook.verify(body, {k: v for k, v in self.headers.items()})
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(400)
                else:
                    with receiver.lock:
                        receiver.events[f"{payload['type']}:{payload['transcript_id']}"] += 1
                        receiver.ids.setdefault(payload["transcript_id"], set()).add(self.headers["webhook-id"])
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/lexia"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Workers:
    """`dramatiq lexia.worker.actors` processes started with the test's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *queues: str, threads: int = 4) -> subprocess.Popen[bytes]:
        cmd = [DRAMATIQ, "lexia.worker.actors", "--processes", "1", "--threads", str(threads)]
        if queues:
            cmd += ["--queues", *queues]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parent_of(pid: int) -> int:
    """The parent pid of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    env = {
        **os.environ,
        **BASE_ENV,
        **JOB_ENV,
        "LEXIA_STORAGE_DIR": str(tmp_path / "storage"),
        "LEXIA_FAKE_ENGINE_DELAY": DELAY,
        "LEXIA_LOG_LEVEL": "WARNING",
        "LEXIA_LLM_ENABLED": "false",
    }
    group = Workers(env)
    yield group
    group.stop()


async def test_all_jobs_complete_once_when_a_worker_is_killed_mid_job(
    serve_app: AppFactory, workers: Workers, tmp_path: Path
) -> None:
    settings = job_settings(tmp_path, LEXIA_FAKE_ENGINE_DELAY=DELAY)
    api = await serve_app(settings)  # the real Redis broker of the test Redis db
    _, key = await api.make_key("stt,jobs,admin", limits={"max_concurrent_jobs": 0})
    auth = bearer(key)
    secret = (await api.client.get("/v1/webhooks/secret", headers=auth)).json()["secret"]
    hook = VerifyingReceiver(secret)
    try:
        workers.start("webhooks", threads=2)
        doomed = workers.start("transcription", "diarization")
        survivor = workers.start("transcription", "diarization")
        audio = wav_bytes(3.0, tmp_path / "clip.wav")
        ids = []
        for i in range(JOBS):
            response = await api.client.post(
                "/v1/transcriptions",
                files={"file": (f"clip{i}.wav", audio, "audio/wav")},
                data={"webhook_url": hook.url, "metadata": json.dumps({"n": str(i)})},
                headers=auth,
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])

        async def victim() -> tuple[str, int] | None:
            for job_id, owner in sql("SELECT id, worker FROM jobs WHERE status = 'processing' AND worker IS NOT NULL"):
                pid = int(owner.rsplit(":", 1)[1])
                try:
                    if parent_of(pid) == doomed.pid:
                        return job_id, pid
                except (FileNotFoundError, ProcessLookupError):
                    continue
            return None

        job_id, pid = await wait_for(victim, timeout=30)
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(doomed.wait, 15)  # its dramatiq main process stops once the child is gone
        workers.start("transcription", "diarization")

        async def all_completed() -> bool:
            rows = sql("SELECT status, count(*) FROM jobs GROUP BY status")
            return dict(rows).get("completed", 0) == JOBS

        await wait_for(all_completed, timeout=45, every=0.2)

        async def all_delivered() -> bool:
            return sum(hook.events.values()) >= JOBS and not sql(
                "SELECT 1 FROM webhook_deliveries WHERE status <> 'succeeded'"
            )

        await wait_for(all_delivered, timeout=20, every=0.1)

        async def no_delivery_left() -> bool:
            # Every delivery message acknowledged (the broker drops a message from `<queue>.msgs`
            # once acked), so no duplicate POST can still be on its way; a stopped worker never gets
            # here. (The killed worker's job message stays unacked until Dramatiq's own recovery
            # requeues it; its claim then skips the completed job.)
            redis = api.services.redis
            return await redis.hlen("lexia:webhooks.msgs") + await redis.hlen("lexia:webhooks.DQ.msgs") == 0

        await wait_for(no_delivery_left, timeout=20, every=0.1)
        assert survivor.poll() is None, "the surviving worker must keep running"
    finally:
        hook.close()

    # The killed job ran again: its lease lapsed, the sweeper re-enqueued it, a new attempt claimed it.
    (attempts,) = sql("SELECT attempts FROM jobs WHERE id = %s", job_id)[0]
    assert attempts == 2
    for transcript_id in ids:
        body = (await api.client.get(f"/v1/transcriptions/{transcript_id}", headers=auth)).json()
        assert body["status"] == "completed" and body["text"] and body["audio_duration"] == 3.0
    # Each result written once: one usage event and one delivery per job, in the terminal transaction.
    usage = dict(sql("SELECT request_id, count(*) FROM usage_events WHERE kind = 'stt' GROUP BY request_id"))
    assert usage == dict.fromkeys(ids, 1)
    deliveries = dict(sql("SELECT resource_id, count(*) FROM webhook_deliveries GROUP BY resource_id"))
    assert deliveries == dict.fromkeys(ids, 1)
    # The receiver verified every signature and saw exactly one completion event per job.
    assert hook.rejected == 0
    assert hook.events == Counter({f"transcript.completed:{i}": 1 for i in ids})
    assert all(len(v) == 1 for v in hook.ids.values())
    # Audio is deleted after processing by default; nothing is left in the storage directory.
    assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []
