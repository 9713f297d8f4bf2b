"""`make reliability`: faults, fuzz, bad input, access matrices and a soak on an isolated stack;
writes docs/reliability.md (python -m tests.reliability.run --help).

Everything runs on a PostgreSQL cluster and a Redis of its own on spare ports (so they can be
stopped and restarted) and a Lexia stack started with bin/start (API + worker, fake engines with
a per-audio-second delay). `--source DIR` runs the fault scenarios against another checkout (the
"before" column of the recovery table).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.reliability import chaos
from tests.reliability.fuzz import run_fuzz
from tests.reliability.infra import ROOT, Postgres, Receiver, Redis, Stack, free_port, scratch

PEPPER = "reliability-pepper-" + "p" * 40
KEPT_LOG = Path("/tmp/lexia-reliability-stack.log")  # the last run's stack log, for reading after
FUZZ_LOG = Path("/tmp/lexia-reliability-fuzz.txt")  # the last run's schemathesis output
SUITES = {  # pytest groups of the default suite, run again here against the spare services
    "bad-input corpus": ["tests/test_corpus.py", "tests/test_bad_input.py", "tests/stt/test_bad_audio.py"],
    "tenant × scope matrix": ["tests/test_access_matrix.py", "tests/test_route_auth.py"],
    "SSRF matrix": ["tests/test_netguard.py", "tests/test_webhooks.py"],
    "secrets-in-logs canaries": ["tests/test_secrets_in_logs.py"],
    "stop paths (Ctrl-C, SIGTERM, group)": ["tests/test_stop.py"],
}


def stack_env(source: Path, pg: Postgres, redis: Redis, storage: Path) -> dict[str, str]:
    venv = ROOT / ".venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEXIA_")}
    env.update({
        "VENV": str(venv), "PYTHONPATH": str(source), "LEXIA_DATABASE_URL": pg.url, "LEXIA_REDIS_URL": redis.url,
        "LEXIA_KEY_PEPPER": PEPPER, "LEXIA_ENGINES": "fake", "LEXIA_FAKE_ENGINE_DELAY": "0.5",
        "LEXIA_HOST": "127.0.0.1", "LEXIA_PORT": str(free_port()), "LEXIA_STORAGE_DIR": str(storage),
        "LEXIA_SSRF_ALLOWLIST": "127.0.0.1/32", "LEXIA_SHUTDOWN_GRACE_SECONDS": "10",
        "LEXIA_DEFAULT_REQUESTS_PER_MINUTE": "0", "LEXIA_DEFAULT_TOKENS_PER_MINUTE": "0",
        "LEXIA_DEFAULT_AUDIO_SECONDS_PER_HOUR": "0", "LEXIA_DEFAULT_MAX_CONCURRENT_JOBS": "0",
        "LEXIA_WEBHOOK_RETRY_SCHEDULE": "2s,5s,10s,30s", "LEXIA_LOG_LEVEL": "INFO",
    })
    return env


def make_key(source: Path, env: dict[str, str], tenant: str, name: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(source / "bin" / "lexia-key"), "create", "--name", name, "--scopes", "*", "--tenant", tenant, "--json"],
        env=env, cwd=source, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_suites(pg: Postgres, redis: Redis, names: list[str]) -> list[chaos.Finding]:
    findings = []
    for name in names:
        files = [f for f in SUITES[name] if (ROOT / f).exists()]
        report = Path(f"/tmp/lexia-reliability-{os.getpid()}-{len(findings)}.xml")
        env = {**os.environ, "LEXIA_TEST_PG": f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}",
               "LEXIA_TEST_REDIS_URL": redis.url.replace("/0", "/3")}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                               *files], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        tests = failures = 0
        if report.exists():
            suite = ET.parse(report).getroot().find("testsuite")
            if suite is not None:
                tests, failures = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            report.unlink()
        finding = chaos.Finding(name, load=f"{tests} tests ({', '.join(Path(f).name for f in files)})",
                                faults="-", inputs=tests)
        finding.notes.append(f"{tests - failures}/{tests} passed in {time.monotonic() - started:.0f} s")
        if proc.returncode != 0:
            finding.passed = False
            finding.notes.append(proc.stdout[-1500:])
        findings.append(finding)
        print(f"  {name}: {finding.notes[0]}", flush=True)
    return findings


def canary_hits(paths: list[Path], secrets: list[str]) -> int:
    hits = 0
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace")
            hits += sum(text.count(s) for s in secrets if s)
    return hits


async def fault_scenarios(stack: Stack, receiver: Receiver, pg: Postgres, redis: Redis, key: str,
                          manual_worker_restart: bool) -> list[chaos.Finding]:
    out = []
    print("  worker SIGKILL", flush=True)
    out.append(await chaos.worker_kill(stack, receiver, pg, key, manual_restart=manual_worker_restart))
    print("  Redis stop", flush=True)
    out.append(await chaos.outage("Redis stopped 10 s under mixed load", stack, receiver, pg, key,
                                  chaos.redis_stop(redis, 10)))
    print("  PostgreSQL restart", flush=True)
    out.append(await chaos.outage("PostgreSQL restarted under mixed load", stack, receiver, pg, key,
                                  chaos.pg_restart(pg)))
    print("  PostgreSQL stop", flush=True)
    out.append(await chaos.outage("PostgreSQL stopped 10 s under mixed load", stack, receiver, pg, key,
                                  chaos.pg_stop(pg, 10)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose bin/start is tested")
    parser.add_argument("--only", default="faults,suites,fuzz,soak", help="comma-separated parts")
    parser.add_argument("--fuzz-seconds", type=int, default=600)
    parser.add_argument("--soak-seconds", type=int, default=300)
    parser.add_argument("--write", type=Path, help="write the report here (docs/reliability.md)")
    parser.add_argument("--json", type=Path, help="also write the findings as JSON")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    source = args.source.resolve()
    started = time.monotonic()
    findings: list[chaos.Finding] = []
    with scratch() as root:
        pg, redis, receiver = Postgres(root), Redis(root), Receiver()
        pg.init()
        redis.start()
        receiver.start()
        stack = None
        try:
            env = stack_env(source, pg, redis, root / "storage")
            subprocess.run([str(source / "bin" / "migrate")], env=env, cwd=source, check=True, capture_output=True)
            key = make_key(source, env, "reliability", "load")
            stack = Stack(source, env, root / "stack.log")
            stack.start()
            print(f"stack up at {stack.base_url} ({source})", flush=True)
            if "faults" in parts:
                findings += asyncio.run(fault_scenarios(stack, receiver, pg, redis, key["key"], source != ROOT))
            if "fuzz" in parts:
                print(f"  schemathesis --checks all ({args.fuzz_seconds} s)", flush=True)
                fuzzer, spare = make_key(source, env, "fuzz", "fuzzer"), make_key(source, env, "fuzz", "spare")
                result = run_fuzz(stack.base_url, fuzzer["key"], spare["id"], max_time=args.fuzz_seconds)
                finding = chaos.Finding("schemathesis --checks all", load=f"{result.operations} operations",
                                        faults="-", inputs=result.cases, server_errors=result.server_errors)
                finding.passed = result.failures == 0
                FUZZ_LOG.write_text(result.output)
                finding.notes.append(f"{result.failures} failures (schemathesis' report: {FUZZ_LOG})")
                if result.failures:
                    finding.notes.append("; ".join(
                        line.strip() for line in result.output.splitlines()
                        if line.startswith("_____") or line.startswith("- ST") or line.startswith("[")
                    )[:3000])
                findings.append(finding)
            if "soak" in parts:
                print(f"  soak ({args.soak_seconds} s)", flush=True)
                findings.append(asyncio.run(chaos.soak(stack, receiver, pg, key["key"], args.soak_seconds)))
            stop_seconds = stack.stop()
            stack = None
            shutil.copy(root / "stack.log", KEPT_LOG)
            canaries = [PEPPER, key["key"], "SECRETCANARY"]
            hits = canary_hits([root / "stack.log", pg.log], canaries)
            logs = chaos.Finding("secrets in the run's logs", load="stack and PostgreSQL logs of every part above",
                                 faults="-", inputs=len(canaries))
            logs.notes.append(f"{hits} occurrences of the pepper, the load key or the webhook auth value; "
                              f"the stack stopped {stop_seconds:.1f} s after SIGTERM to its group")
            logs.passed = hits == 0
            findings.append(logs)
        finally:
            if stack is not None:
                stack.stop(10)
            receiver.stop()
            redis.destroy()
            if "suites" not in parts:
                pg.destroy()
        if "suites" in parts:
            redis.start()
            try:
                findings += run_suites(pg, redis, list(SUITES))
            finally:
                redis.destroy()
                pg.destroy()
    elapsed = time.monotonic() - started
    report = render(findings, source, elapsed)
    print(report)
    if args.write:
        write_results(args.write, report)
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in findings], indent=2, default=str))
    return 0 if all(f.passed for f in findings) else 1


BEGIN, END = "<!-- results: written by make reliability -->", "<!-- /results -->"


def write_results(path: Path, report: str) -> None:
    """Replace the results section of the document (between its markers) with `report`."""
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{report}{END}{tail}")


def _commit(source: Path) -> str:
    out = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False)
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!docs/reliability.md"], capture_output=True, text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def render(findings: list[chaos.Finding], source: Path, elapsed: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "| test | load held | faults survived | inputs tried | lost | 5xx | 503 (documented) | result |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for f in findings:
        lines.append(f"| {f.test} | {f.load} | {f.faults} | {f.inputs} | {f.lost} | {f.server_errors} | "
                     f"{f.unavailable} | {'pass' if f.passed else 'FAIL'} |")
    recovery = [f"| {f.test} | {name} | {'never' if math.isinf(v) else v} |"
                for f in findings for name, v in f.recovery.items()]
    notes = [f"- **{f.test}**: " + " ".join(re.sub(r"\s+", " ", n) for n in f.notes) for f in findings if f.notes]
    return "\n".join([
        f"Run {now}, commit {_commit(source)}, {elapsed / 60:.1f} min.",
        "",
        *lines,
        "",
        "| scenario | recovery | seconds |",
        "|---|---|---:|",
        *recovery,
        "",
        *notes,
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
