"""Gateway overhead: authenticated, rate-limited GET /v1/models vs a bare Litestar app.

All are served the same way (uvicorn, one process, pinned to CPU 0) and driven by wrk pinned
to CPU 1, at concurrency 1 and 64. The benchmark key allows 100M requests/min, so Lexia admits
from local leases of its allowance (LEXIA_RATE_LIMIT_LEASE_FRACTION); a second Lexia with leases
off shows the per-request Redis path. Prints a markdown table with the ratio to the baseline.
Needs PostgreSQL and Redis (as for the tests) and Debian's wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lexia.db import open_db  # noqa: E402
from lexia.db.keys import KeyTable  # noqa: E402
from lexia.db.migrations import apply, ensure_database  # noqa: E402
from lexia.services.access.keys import KeyService  # noqa: E402

DB_URL = os.environ.get("LEXIA_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/lexia_bench")
REDIS_URL = os.environ.get("LEXIA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PEPPER = "bench-pepper-" + "b" * 40
EXACT = "lexia, lease off"


def _cpus() -> tuple[str, str]:
    count = os.cpu_count() or 1
    return ("0", "1") if count >= 2 else ("0", "0")


def _pin(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") else []


async def _make_key() -> str:
    ensure_database(DB_URL)
    apply(DB_URL)
    db = open_db(DB_URL, pool_size=1)
    keys = KeyService(KeyTable(db), pepper=PEPPER)
    _, secret = await keys.create(
        tenant_id="bench", name="gateway", scopes=["*"], create_tenant=True,
        limits={"requests_per_minute": 100_000_000},
    )
    await db.dispose()
    return secret


def _wait_up(url: str, headers: dict[str, str], timeout: float = 30) -> bytes:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=1) as r:
                return bytes(r.read())
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up")


def _serve(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    cmd = [*_pin(_cpus()[1]), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)

    def pct(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(match.group(1)), match.group(2)  # type: ignore[union-attr]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": float(non2xx.group(1)) if non2xx else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=8311)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    secret = asyncio.run(_make_key())
    auth = {"Authorization": f"Bearer {secret}"}
    server_cpu = _cpus()[0]
    env = {
        **os.environ, "LEXIA_DATABASE_URL": DB_URL, "LEXIA_REDIS_URL": REDIS_URL, "LEXIA_KEY_PEPPER": PEPPER,
        "LEXIA_ENGINES": "fake", "LEXIA_PORT": str(args.port), "LEXIA_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{args.port}/v1/models"
    bare_url = f"http://127.0.0.1:{args.port + 1}/v1/models"
    exact_url = f"http://127.0.0.1:{args.port + 2}/v1/models"
    procs = [_serve([*_pin(server_cpu), sys.executable, "-m", "lexia.serve"], env)]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        body = _wait_up(url, auth)
        procs.append(_serve(
            [*_pin(server_cpu), sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app",
             "--port", str(args.port + 1), "--no-access-log", "--log-level", "warning"],
            {**env, "BARE_BODY": body.decode()},
        ))
        # The same server with leases off: one Redis round trip (batched per loop tick) a request.
        procs.append(_serve(
            [*_pin(server_cpu), sys.executable, "-m", "lexia.serve"],
            {**env, "LEXIA_PORT": str(args.port + 2), "LEXIA_RATE_LIMIT_LEASE_FRACTION": "0"},
        ))
        targets = [("bare", bare_url, {}), ("lexia", url, auth), (EXACT, exact_url, auth)]
        _wait_up(bare_url, {})
        _wait_up(exact_url, auth)
        for _, target, headers in targets:  # warm-up
            _wrk(target, 64, 3, headers)
        # Alternate the servers round by round, so drift in the machine's load hits all alike.
        for conns in (1, 64):
            for _ in range(args.rounds):
                for name, target, headers in targets:
                    runs.setdefault((name, conns), []).append(_wrk(target, conns, args.seconds, headers))
    finally:
        for proc in procs:
            _stop(proc)
    results = {
        k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99", "errors")} for k, v in runs.items()
    }
    print(
        f"\nGET /v1/models, uvicorn 1 process on CPU {server_cpu}, wrk on CPU {_cpus()[1]}, "
        f"median of {args.rounds} alternating runs of {args.seconds} s\n"
    )
    print("| server | connections | req/s | p50 ms | p99 ms | non-2xx | throughput vs bare |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for conns in (1, 64):
        base = results[("bare", conns)]["rps"]
        for name in ("bare", "lexia", EXACT):
            r = results[(name, conns)]
            print(
                f"| {name} | {conns} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} | "
                f"{r['rps'] / base:.2f} |"
            )
    print(json.dumps({f"{k[0]}@{k[1]}": v for k, v in results.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
