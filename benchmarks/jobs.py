"""Async job pipeline throughput: 1,000 jobs through the API, Redis and real Dramatiq workers.

The API (`python -m lexia.serve`) and the workers (`dramatiq lexia.worker.actors`) run as
separate processes with fake engines, exactly as `make start` runs them. A minimal client (a
pre-built request on keep-alive sockets, so the load generator takes little of the shared CPUs)
uploads `--jobs` short WAV clips to POST /v1/transcriptions; every job's row records when it was
committed (`created_at`), claimed by a worker (`started_at`) and finished (`finished_at`).

Two passes: jobs offered at `--rate` per second (open-loop arrivals: the time from commit to
start is the pick-up latency), then as fast as the API accepts them (throughput at saturation,
where commit-to-start is mostly time spent queued). Reported per pass: end-to-end jobs/s (first
commit to last completion) and the median / p99 time from commit to start (targets: >= 100
jobs/s, median < 50 ms). Needs PostgreSQL and Redis (as for the tests). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import redis
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lexia.db.migrations import apply, ensure_database, libpq_dsn  # noqa: E402

DB_URL = os.environ.get("LEXIA_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/lexia_bench_jobs")
REDIS_URL = os.environ.get("LEXIA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PEPPER = "bench-pepper-" + "j" * 40
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fresh_database() -> None:
    info = psycopg.conninfo.conninfo_to_dict(libpq_dsn(DB_URL))
    with psycopg.connect(**dict(info, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{info["dbname"]}" WITH (FORCE)')
    ensure_database(DB_URL)
    apply(DB_URL)


def _clip(path: Path, seconds: float) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, subtype="PCM_16", format="WAV")
    return path.read_bytes()


def _env(storage: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "LEXIA_ENV": "development",
        "LEXIA_ENGINES": "fake",
        "LEXIA_LLM_ENABLED": "false",
        "LEXIA_KEY_PEPPER": PEPPER,
        "LEXIA_DATABASE_URL": DB_URL,
        "LEXIA_REDIS_URL": REDIS_URL,
        "LEXIA_STORAGE_DIR": str(storage),
        "LEXIA_PORT": str(port),
        "LEXIA_LOG_LEVEL": "WARNING",
        "LEXIA_QUEUE_MAX_DEPTH": "100000",
        "LEXIA_DB_POOL_SIZE": "20",
    }


def _create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [str(BIN / "lexia-key"), "create", "--tenant", "bench", "--name", "bench", "--scopes", "*"],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    key = next(w for w in out.split() if w.startswith("lx_") and len(w) == 46)
    limits = {"requests_per_minute": 0, "audio_seconds_per_hour": 0, "max_concurrent_jobs": 0}
    with psycopg.connect(libpq_dsn(DB_URL), autocommit=True) as conn:
        conn.execute(
            "UPDATE api_keys SET requests_per_minute = %(requests_per_minute)s, "
            "audio_seconds_per_hour = %(audio_seconds_per_hour)s, max_concurrent_jobs = %(max_concurrent_jobs)s",
            limits,
        )
    return key


async def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("the API process exited during start-up")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the API did not start")


def _request(port: int, key: str, clip: bytes) -> bytes:
    """One multipart POST /v1/transcriptions, built once and sent as is (keep-alive)."""
    boundary = "lexiabenchboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode() + clip + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /v1/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _submit(
    port: int, key: str, clip: bytes, jobs: int, concurrency: int, rate: float = 0.0
) -> tuple[float, int]:
    """Send `jobs` uploads over `concurrency` keep-alive connections with a minimal client.

    The load generator shares the machine with the server, so it is kept as cheap as possible
    (a pre-built request, raw sockets), as wrk is for the gateway benchmark.
    """
    request = _request(port, key, clip)
    remaining = [jobs]
    loop = asyncio.get_running_loop()
    start = loop.time()
    issued = [0]

    async def pace() -> None:
        """With --rate, the n-th request leaves at start + n / rate (an open-loop arrival schedule)."""
        if rate > 0:
            due = start + issued[0] / rate
            issued[0] += 1
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def sender() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                await pace()
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if status != 202:
                    raise SystemExit(f"submit failed: {status} {body[:300]!r}")
                sent += 1
        finally:
            writer.close()
        return sent

    t0 = time.perf_counter()
    done = await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - t0, sum(done)


def _wait_done(jobs: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq_dsn(DB_URL), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('completed', 'error', 'cancelled')").fetchone()
            if row is not None and row[0] >= jobs:
                return
            time.sleep(0.1)
    raise SystemExit("jobs did not finish in time")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(_cpu_seconds(int(child)) for child in children)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _run(args: argparse.Namespace, rate: float) -> dict[str, str]:
    """One pass: fresh database and Redis db, the API and the workers started, `--jobs` submitted."""
    _fresh_database()
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="lexia-bench-jobs-") as tmp:
        work = Path(tmp)
        port = _free_port()
        env = _env(work / "storage", port)
        key = _create_key(env)
        clip = _clip(work / "clip.wav", args.seconds)
        api = subprocess.Popen([sys.executable, "-m", "lexia.serve"], cwd=ROOT, env=env)
        workers = [
            subprocess.Popen(
                [str(BIN / "dramatiq"), "lexia.worker.actors", "--processes", "1", "--threads", str(args.threads)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for _ in range(args.workers)
        ]
        try:
            asyncio.run(_wait_ready(f"http://127.0.0.1:{port}", api))
            time.sleep(3)  # workers load their engines at boot
            api_cpu0 = _cpu_seconds(api.pid)
            worker_cpu0 = sum(_cpu_seconds(w.pid) for w in workers)
            submit_seconds, _ = asyncio.run(_submit(port, key, clip, args.jobs, args.concurrency, rate))
            _wait_done(args.jobs, timeout=600)
            api_cpu = _cpu_seconds(api.pid) - api_cpu0
            worker_cpu = sum(_cpu_seconds(w.pid) for w in workers) - worker_cpu0
        finally:
            for proc in [api, *workers]:
                proc.send_signal(signal.SIGTERM)
            for proc in [api, *workers]:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    with psycopg.connect(libpq_dsn(DB_URL)) as conn:
        rows = conn.execute("SELECT status, created_at, started_at, finished_at, attempts FROM jobs").fetchall()
    completed = [r for r in rows if r[0] == "completed"]
    waits = [(r[2] - r[1]).total_seconds() * 1000 for r in completed]
    runs = [(r[3] - r[2]).total_seconds() * 1000 for r in completed]
    span = (max(r[3] for r in completed) - min(r[1] for r in completed)).total_seconds()
    return {
        "completed": f"{len(completed)} / {args.jobs} (retried: {sum(r[4] > 1 for r in completed)})",
        "accepted (202s per second)": f"{args.jobs / submit_seconds:.0f}",
        "**end-to-end jobs/s** (first commit to last completion)": f"**{len(completed) / span:.0f}**",
        "**commit to start, median**": f"**{statistics.median(waits):.1f} ms**",
        "commit to start, p99": f"{_percentile(waits, 0.99):.1f} ms",
        "commit to start, max": f"{max(waits):.1f} ms",
        "start to completion, median": f"{statistics.median(runs):.1f} ms",
        "CPU per job: API / workers": f"{api_cpu / args.jobs * 1000:.1f} ms / {worker_cpu / args.jobs * 1000:.1f} ms",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="offered submissions per second (first pass)")
    parser.add_argument("--concurrency", type=int, default=16, help="submissions in flight")
    parser.add_argument("--workers", type=int, default=2, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads (jobs in flight) per worker process")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each clip")
    parser.add_argument("--no-saturation", action="store_true", help="skip the as-fast-as-possible pass")
    args = parser.parse_args()

    passes = {f"offered {args.rate:g} jobs/s": _run(args, args.rate)}
    if not args.no_saturation:
        passes["as fast as the API accepts"] = _run(args, 0.0)
    print()
    print(f"{args.jobs} jobs per pass, {args.seconds:g} s WAV uploads, fake engines, API + {args.workers} worker "
          f"processes x {args.threads} threads, PostgreSQL, Redis and the load generator on {os.cpu_count()} CPUs")
    print()
    print("| | " + " | ".join(passes) + " |")
    print("|---|" + "---|" * len(passes))
    for metric in next(iter(passes.values())):
        print(f"| {metric} | " + " | ".join(p[metric] for p in passes.values()) + " |")
    return 0 if all(p["completed"].startswith(f"{args.jobs} /") for p in passes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
