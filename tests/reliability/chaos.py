"""Faults under load: a worker killed mid-job, Redis stopped, PostgreSQL restarted and stopped, and a
soak. Each scenario drives a running stack (tests/reliability/infra.py) and returns a Finding:
what load it held, which faults it survived, and what was lost (accepted jobs that never ended,
webhooks never delivered, LLM requests never metered), how many 5xx answers it got and how long
recovery took.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import signal
import struct
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import psycopg

from tests.reliability.infra import Postgres, Receiver, Redis, Stack, alive, open_files, rss_mib, wait_for

TERMINAL = {"completed", "error", "cancelled"}


def wav(seconds: float, rate: int = 16000) -> bytes:
    """A tone with pauses (the fake engines need audio, not speech)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            on = (i // (rate // 4)) % 2 == 0
            frames += struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate)) if on else 0)
        w.writeframes(bytes(frames))
    return buf.getvalue()


@dataclass
class Finding:
    """One row of docs/reliability.md."""

    test: str
    load: str = ""
    faults: str = ""
    inputs: int = 0
    lost: int = 0
    server_errors: int = 0  # 5xx other than the documented 503 while a dependency is down
    unavailable: int = 0  # documented 503s (dependency down or shutting down)
    recovery: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passed: bool = True


@dataclass
class Load:
    """Mixed traffic against the stack: async jobs with webhooks, sync transcriptions, chat, polls."""

    base_url: str
    key: str
    webhook_url: str
    job_seconds: float = 2.0
    statuses: Counter[str] = field(default_factory=Counter)
    jobs: dict[str, float] = field(default_factory=dict)  # accepted job id -> accepted at
    chat_ids: list[str] = field(default_factory=list)  # request ids of 200 chat completions
    errors: Counter[str] = field(default_factory=Counter)
    stopping: bool = False

    def _count(self, kind: str, status: int) -> None:
        self.statuses[f"{kind} {status}"] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for k, n in self.statuses.items() if k.split()[1].startswith("5") and not k.endswith(" 503"))

    @property
    def unavailable(self) -> int:
        return sum(n for k, n in self.statuses.items() if k.endswith(" 503"))

    async def submit(self, client: httpx.AsyncClient, audio: bytes) -> str | None:
        r = await client.post(
            "/v1/transcriptions", files={"file": ("a.wav", audio, "audio/wav")},
            data={"webhook_url": self.webhook_url, "webhook_auth_header_name": "X-Canary",
                  "webhook_auth_header_value": "SECRETCANARY-webhook-value"},
        )
        self._count("submit", r.status_code)
        if r.status_code == 202:
            job = str(r.json()["id"])
            self.jobs[job] = time.time()
            return job
        return None

    async def _loop(self, step: Callable[[httpx.AsyncClient], Awaitable[None]], pause: float) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"},
                                     timeout=60) as client:
            while not self.stopping:
                try:
                    await step(client)
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))

    async def run(self, seconds: float, *, submit_every: float = 1.0) -> None:
        audio, short = wav(self.job_seconds), wav(1.0)

        async def submit(client: httpx.AsyncClient) -> None:
            await self.submit(client, audio)

        async def sync(client: httpx.AsyncClient) -> None:
            r = await client.post("/v1/audio/transcriptions", files={"file": ("s.wav", short, "audio/wav")},
                                  data={"model": "whisper-1"})
            self._count("sync", r.status_code)

        async def chat(client: httpx.AsyncClient) -> None:
            r = await client.post("/v1/chat/completions", json={
                "model": "lexia-fake-llm", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8})
            self._count("chat", r.status_code)
            if r.status_code == 200:
                self.chat_ids.append(r.headers.get("x-request-id", ""))

        async def poll(client: httpx.AsyncClient) -> None:
            if self.jobs:
                r = await client.get(f"/v1/jobs/{random.choice(list(self.jobs))}")
                self._count("poll", r.status_code)

        self.stopping = False
        tasks = [asyncio.create_task(self._loop(step, pause)) for step, pause in (
            (submit, submit_every), (sync, 1.0), (chat, 0.3), (chat, 0.3), (poll, 0.2))]
        await asyncio.sleep(seconds)
        self.stopping = True
        await asyncio.gather(*tasks)


async def job_states(base_url: str, key: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """GET every job (retrying transport errors)."""
    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        for job in ids:
            for _ in range(5):
                with contextlib.suppress(httpx.HTTPError):
                    r = await c.get(f"/v1/jobs/{job}")
                    if r.status_code == 200:
                        out[job] = r.json()
                        break
                await asyncio.sleep(0.5)
    return out


async def settle(load: Load, receiver: Receiver, timeout: float) -> tuple[dict[str, dict[str, Any]], float]:
    """Wait until every accepted job has ended and its webhook arrived; (states, seconds waited)."""
    started = time.monotonic()
    states: dict[str, dict[str, Any]] = {}
    while time.monotonic() - started < timeout:
        states = await job_states(load.base_url, load.key, list(load.jobs))
        ended = [j for j, s in states.items() if s["status"] in TERMINAL]
        hooks = receiver.by_resource()
        if len(ended) == len(load.jobs) and all(j in hooks for j in ended):
            break
        await asyncio.sleep(1.0)
    return states, time.monotonic() - started


def count_losses(finding: Finding, load: Load, receiver: Receiver, states: dict[str, dict[str, Any]],
                 pg: Postgres) -> None:
    """lost = accepted jobs not ended + ended jobs without a webhook + 200 chat requests not metered."""
    hooks = receiver.by_resource()
    unended = [j for j in load.jobs if states.get(j, {}).get("status") not in TERMINAL]
    unhooked = [j for j in load.jobs if j not in unended and j not in hooks]
    duplicates = sum(len({h for _, h in hooks.get(j, [])}) - 1 for j in load.jobs if j in hooks)
    redelivered = sum(len(hooks.get(j, [])) - len({h for _, h in hooks.get(j, [])}) for j in load.jobs)
    failed = [j for j in load.jobs if states.get(j, {}).get("status") == "error"]
    unmetered = unmetered_requests(pg, load.chat_ids)
    finding.lost += len(unended) + len(unhooked) + unmetered
    finding.server_errors += load.server_errors
    finding.unavailable += load.unavailable
    finding.inputs += load.requests
    finding.notes.append(
        f"{len(load.jobs)} jobs accepted, {len(unended)} never ended, {len(failed)} failed, "
        f"{len(unhooked)} without webhook, {duplicates} duplicate events, {redelivered} repeated deliveries; "
        f"{len(load.chat_ids)} chat completions, {unmetered} not metered; "
        f"transport errors {dict(load.errors) or 0}"
    )
    if failed:
        codes = Counter((states[j].get("error") or {}).get("code") for j in failed)
        finding.notes.append(f"failed jobs by code: {dict(codes)}")
    if duplicates:  # not a loss, but a failure of the at-most-once event promise
        finding.passed = False


def unmetered_requests(pg: Postgres, request_ids: list[str]) -> int:
    """How many of these request ids have no usage event (after the usage buffer's flush)."""
    if not request_ids:
        return 0
    dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname=lexia_reliability"
    for _ in range(30):
        with psycopg.connect(dsn) as conn:
            found = {r[0] for r in conn.execute(
                "SELECT request_id FROM usage_events WHERE request_id = ANY(%s)", (request_ids,))}
        missing = len(set(request_ids) - found)
        if missing == 0:
            return 0
        time.sleep(1)
    return missing


def finish(finding: Finding) -> Finding:
    finding.passed = finding.passed and finding.lost == 0 and finding.server_errors == 0
    return finding


# -- scenarios ---------------------------------------------------------------------------------------


async def worker_kill(stack: Stack, receiver: Receiver, pg: Postgres, key: str, jobs: int = 20, *,
                      manual_restart: bool = False) -> Finding:
    """20 jobs with webhooks; SIGKILL the worker process while jobs run; every job must still end.

    `manual_restart`: a stack that does not restart its worker gets one started by hand after 20 s
    (what an operator would do), so its recovery can be measured at all."""
    finding = Finding("worker SIGKILL mid-job", load=f"{jobs} async jobs with webhooks (4 s audio)")
    load = Load(stack.base_url, key, receiver.url, job_seconds=4.0)
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        audio = wav(4.0)
        for _ in range(jobs):
            await load.submit(client, audio)

        async def running() -> list[str]:
            states = await job_states(stack.base_url, key, list(load.jobs))
            return [j for j, s in states.items() if s["status"] == "processing"]

        deadline = time.monotonic() + 60
        in_flight: list[str] = []
        while time.monotonic() < deadline and len(in_flight) < 2:
            in_flight = await running()
            await asyncio.sleep(0.2)
        victims, before = stack.worker_pids(), set(stack.pids())
        killed_at = time.time()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        finding.faults = f"SIGKILL to the worker ({len(victims)} process) with {len(in_flight)} jobs running"
        def back() -> bool:  # a worker process that was not there before the kill
            return any(p not in before and alive(p) for p in stack.worker_pids())

        restarted = await asyncio.to_thread(wait_for, back, 20 if manual_restart else 120, 0.2)
        if not restarted and manual_restart:
            finding.notes.append("the worker did not come back: one was started by hand 20 s after the kill")
            stack.start_worker()
            restarted = await asyncio.to_thread(wait_for, back, 60, 0.2)
        finding.recovery["worker back (s)"] = round(time.time() - killed_at, 1) if restarted else math.inf
        # When was each job that was running at the kill picked up again?
        resumed: dict[str, float] = {}
        while time.time() - killed_at < 300 and len(resumed) < len(in_flight):
            states = await job_states(stack.base_url, key, in_flight)
            for job, state in states.items():
                if job not in resumed and (state["attempts"] >= 2 or state["status"] in TERMINAL):
                    resumed[job] = time.time() - killed_at
            await asyncio.sleep(0.2)
        finding.recovery["killed jobs running again (s)"] = round(max(resumed.values()), 1) if resumed else math.inf
    states, _ = await settle(load, receiver, 300)
    finding.recovery["all jobs ended (s)"] = round(max(
        (_finished(s) for s in states.values() if s.get("finished_at")), default=killed_at) - killed_at, 1)
    hooks = receiver.by_resource()
    lateness = [min(at for at, _ in hooks[j]) - _finished(states[j]) for j in load.jobs if j in hooks and j in states
                and states[j].get("finished_at")]
    finding.recovery["webhook after job end, max (s)"] = round(max(lateness, default=0.0), 1)
    count_losses(finding, load, receiver, states, pg)
    return finish(finding)


def _finished(state: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(state["finished_at"]).replace("Z", "+00:00")).timestamp()


async def outage(name: str, stack: Stack, receiver: Receiver, pg: Postgres, key: str,
                 fault: Callable[[], Awaitable[float]], *, before: float = 8, after: float = 15) -> Finding:
    """Mixed load for `before` s, then `fault()` (returns when the dependency is back), then `after` s."""
    finding = Finding(name)
    load = Load(stack.base_url, key, receiver.url)
    runner = asyncio.create_task(load.run(before + after + 30))
    await asyncio.sleep(before)
    outage_started = time.time()
    log_from = stack.log.stat().st_size
    back_at = await fault()
    finding.faults = f"{name.split(' under ', maxsplit=1)[0]} ({back_at - outage_started:.0f} s)"
    # Recovery: the first good answer after the dependency is back, and every job accepted so far running.
    first_ok = await _first_ok(stack, key, back_at)
    finding.recovery["API answering (s)"] = round(first_ok - back_at, 1)
    await asyncio.sleep(3)  # the recovery lines of the passes that run every 2 s
    with stack.log.open("rb") as f:
        f.seek(log_from)
        window = f.read().decode(errors="replace")
    lines, tracebacks = window.count("\n"), window.count("Traceback")
    finding.notes.append(f"log lines from the fault until 3 s after the API answered: {lines} ({tracebacks} tracebacks)")
    if tracebacks:
        finding.passed = False
    started_at = await _all_started(stack, key, list(load.jobs), back_at)
    finding.recovery["jobs accepted so far all started (s)"] = round(started_at - back_at, 1)
    load.stopping = True
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    finding.load = f"mixed: async jobs with webhooks, sync transcriptions, chat, polls ({load.requests} requests)"
    states, _ = await settle(load, receiver, 240)
    count_losses(finding, load, receiver, states, pg)
    return finish(finding)


async def _first_ok(stack: Stack, key: str, since: float, timeout: float = 180) -> float:
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=10) as client:
        while time.time() - since < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/v1/jobs?limit=1")).status_code == 200:
                    return time.time()
            await asyncio.sleep(0.1)
    return math.inf


async def _all_started(stack: Stack, key: str, jobs: list[str], since: float, timeout: float = 300) -> float:
    while time.time() - since < timeout:
        states = await job_states(stack.base_url, key, jobs)
        if len(states) == len(jobs) and all(s["status"] != "queued" for s in states.values()):
            return time.time()
        await asyncio.sleep(0.25)
    return math.inf


def redis_stop(redis: Redis, seconds: float) -> Callable[[], Awaitable[float]]:
    async def fault() -> float:
        redis.stop()
        await asyncio.sleep(seconds)
        redis.start()
        return time.time()
    return fault


def pg_stop(pg: Postgres, seconds: float) -> Callable[[], Awaitable[float]]:
    async def fault() -> float:
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(pg.start)
        return time.time()
    return fault


def pg_restart(pg: Postgres) -> Callable[[], Awaitable[float]]:
    async def fault() -> float:
        await asyncio.to_thread(pg.restart)
        return time.time()
    return fault


async def soak(stack: Stack, receiver: Receiver, pg: Postgres, key: str, seconds: float) -> Finding:
    """Mixed load for `seconds`; RSS and open files of the API and the worker every 10 s."""
    finding = Finding(f"soak {seconds / 60:.0f} min")
    load = Load(stack.base_url, key, receiver.url)
    samples: list[tuple[float, float, int, float, int]] = []

    async def sample() -> None:
        while not load.stopping:
            api, workers = stack.api_pid(), stack.worker_pids()
            samples.append((time.monotonic(), rss_mib(api or 0), open_files(api or 0),
                            sum(rss_mib(w) for w in workers), sum(open_files(w) for w in workers)))
            await asyncio.sleep(10)

    sampler = asyncio.create_task(sample())
    await load.run(seconds, submit_every=0.5)
    await sampler
    finding.load = f"mixed: {load.requests} requests, {len(load.jobs)} async jobs in {seconds:.0f} s"
    finding.faults = "none (memory and file descriptors watched)"
    states, _ = await settle(load, receiver, 240)
    count_losses(finding, load, receiver, states, pg)
    if samples:
        first, last = samples[min(2, len(samples) - 1)], samples[-1]  # after warm-up
        peak_api = max(s[1] for s in samples)
        finding.notes.append(
            f"API RSS {first[1]:.0f} -> {last[1]:.0f} MiB (peak {peak_api:.0f}), open files {first[2]} -> {last[2]}; "
            f"worker RSS {first[3]:.0f} -> {last[3]:.0f} MiB, open files {first[4]} -> {last[4]}"
        )
        growth = (last[1] - first[1]) / max(first[1], 1)
        if growth > 0.25 or last[2] > first[2] + 50:
            finding.passed = False
            finding.notes.append("memory or descriptors grew past 25 % / +50")
    return finish(finding)
