"""LLM streaming through Lexia's HTTP API vs the same engine called directly, in one run.

    .venv/bin/python benchmarks/llm.py                 # FakeLLM at a fixed token rate
    .venv-engines/bin/python benchmarks/llm.py --real  # also the tiny random Llama on vLLM (CPU)

For each engine: N concurrent streams of T tokens, first straight from the engine's `stream()`
in this process, then through a live uvicorn server running `lexia.app` (a child process, as
deployed: PostgreSQL, Redis, a real API key, auth, rate limits, usage ledger) with an httpx
client. Reports aggregate tokens/s (ratio target >= 0.95) and the median time to first token
(added TTFT target <= 1 ms). Needs PostgreSQL and Redis (the same ones as the test suite);
the key lives in a `lexia_bench` database that is created and migrated if missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_BASE = os.environ.get("LEXIA_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB_URL = os.environ.get("LEXIA_BENCH_DATABASE_URL", f"{PG_BASE}/lexia_bench")
REDIS_URL = os.environ.get("LEXIA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
FAKE_MODEL = "bench-fake"
REAL_MODEL = "tiny-llama"


@dataclass
class Result:
    """One measured configuration."""

    label: str
    tokens: int
    seconds: float
    ttft: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_median_ms(self) -> float:
        return statistics.median(self.ttft) * 1000


def prompt_words(count: int) -> str:
    """A user message of `count` words (the FakeLLM echoes one token per word)."""
    return " ".join(f"w{i}" for i in range(count))


# -- the server side (child process) --------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """Run Lexia under uvicorn with the requested engine (child process entry point)."""
    import uvicorn

    from lexia.app import create_app
    from lexia.engines.base import Engines
    from lexia.engines.fakes import FakeLLM
    from lexia.settings import load_settings

    fake = FakeLLM(FAKE_MODEL, token_delay=args.token_delay, context_length=8192)
    if args.bare:
        app: Any = bare_app(fake)
    else:
        app = create_app(load_settings(), engines=None if args.real else Engines(llm=fake, mode="fake"))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="on")


def bare_app(engine: Any) -> Any:
    """The HTTP floor: a bare Litestar SSE route over the same engine (no auth, limits, ledger)."""
    import msgspec
    from litestar import Litestar, Request, get, post
    from litestar.response import Stream

    from lexia.engines.base import LLMRequest

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Stream:
        body = msgspec.json.decode(await request.body())
        llm_request = LLMRequest(
            request_id=f"bare-{time.monotonic_ns()}", model=FAKE_MODEL, messages=body["messages"],
            max_tokens=body["max_tokens"],
        )

        async def frames() -> Any:
            last = None
            async for chunk in engine.stream(llm_request):
                last = chunk
                if chunk.text:
                    delta = {"choices": [{"index": 0, "delta": {"content": chunk.text}}], "usage": None}
                    yield b"data: " + msgspec.json.encode(delta) + b"\n\n"
            usage = {"completion_tokens": last.completion_tokens if last else 0}
            yield b"data: " + msgspec.json.encode({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"

        return Stream(frames(), media_type="text/event-stream")

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([chat, health], signature_namespace={"Stream": Stream, "Request": Request, "Any": Any})


# -- the client side ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_key(pepper: str) -> str:
    """A fresh unlimited key in the benchmark database."""
    from lexia.db import open_db
    from lexia.db.keys import KeyTable
    from lexia.db.migrations import apply, ensure_database
    from lexia.services.access.keys import KeyService

    await asyncio.to_thread(ensure_database, DB_URL)
    await asyncio.to_thread(apply, DB_URL)
    db = open_db(DB_URL, pool_size=2)
    try:
        keys = KeyService(KeyTable(db), pepper=pepper, previous_pepper="", cache_seconds=1.0)
        limits = {"requests_per_minute": 0, "tokens_per_minute": 0}
        _, secret = await keys.create(
            tenant_id="bench", name=f"bench-{int(time.time())}", scopes=["llm"], limits=limits, create_tenant=True
        )
    finally:
        await db.dispose()
    return secret


def server_env(args: argparse.Namespace, pepper: str, model_dir: Path | None) -> dict[str, str]:
    env = {
        **os.environ,
        "LEXIA_ENV": "development",
        "LEXIA_DATABASE_URL": DB_URL,
        "LEXIA_REDIS_URL": REDIS_URL,
        "LEXIA_KEY_PEPPER": pepper,
        "LEXIA_LOG_LEVEL": "WARNING",
        "LEXIA_LLM_MAX_QUEUED": "0",
        "LEXIA_STT_ENABLED": "false",
        "LEXIA_DIARIZATION_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    if model_dir is not None:
        env.update(real_engine_env(model_dir, args.streams))
    else:
        env["LEXIA_ENGINES"] = "fake"
    return env


def real_engine_env(model_dir: Path, streams: int) -> dict[str, str]:
    return {
        "LEXIA_ENGINES": "real",
        "LEXIA_LLM_MODEL": str(model_dir),
        "LEXIA_LLM_SERVED_NAME": REAL_MODEL,
        "LEXIA_LLM_MAX_MODEL_LEN": "1024",
        "LEXIA_LLM_DTYPE": "float32",
        "LEXIA_LLM_ENFORCE_EAGER": "true",
        "LEXIA_LLM_MAX_NUM_SEQS": str(streams),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }


async def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become healthy in time")


class Connection:
    """A minimal HTTP/1.1 keep-alive client for SSE streams: cheap enough not to be the bottleneck.

    (httpx costs more CPU per event than the server does; on a small machine the client would
    otherwise dominate the measurement.)
    """

    def __init__(self, port: int, secret: str) -> None:
        self._port = port
        self._secret = secret
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def stream(self, body: dict[str, Any]) -> tuple[int, float]:
        """POST a streamed chat completion; return (completion tokens, time to first content token)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        payload = json.dumps(body).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
            f"Authorization: Bearer {self._secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        writer.write(head + payload)
        status_line = await reader.readline()
        if b" 200 " not in status_line:
            raise RuntimeError(f"unexpected response: {status_line!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # headers (the body is chunked: uvicorn streams with Transfer-Encoding: chunked)
        first = 0.0
        tokens = 0
        buffer = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            buffer += data[:-2]
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                chunk = json.loads(event[6:])
                if chunk["usage"] is not None:
                    tokens = chunk["usage"]["completion_tokens"]
                if not first and any(choice["delta"].get("content") for choice in chunk["choices"]):
                    first = time.perf_counter() - started
        return tokens, first

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


async def through_lexia(label: str, port: int, secret: str, model: str, args: argparse.Namespace,
                        ramp: float, prompt: str) -> Result:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": args.tokens,
        "min_tokens": args.tokens,
    }
    connections = [Connection(port, secret) for _ in range(args.streams)]
    try:
        # Warm-up: one keep-alive connection per stream, as a long-lived client pool would have.
        warm = {**body, "max_tokens": 2, "min_tokens": 2}
        await asyncio.gather(*(c.stream(warm) for c in connections))

        async def one(i: int) -> tuple[int, float]:
            await asyncio.sleep(ramp * i / args.streams)
            return await connections[i].stream(body)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(args.streams)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in connections))
    return Result(label, sum(r[0] for r in results), seconds, [r[1] for r in results])


async def direct(label: str, engine: Any, args: argparse.Namespace, ramp: float, prompt: str) -> Result:
    from lexia.engines.base import LLMRequest

    async def one(i: int, delay: float) -> tuple[int, float]:
        await asyncio.sleep(delay)
        request = LLMRequest(
            request_id=f"direct-{i}-{time.monotonic_ns()}",
            model="bench",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=args.tokens,
            min_tokens=args.tokens,
        )
        started = time.perf_counter()
        first = 0.0
        tokens = 0
        async for chunk in engine.stream(request):
            tokens = chunk.completion_tokens
            if chunk.text and not first:
                first = time.perf_counter() - started
        return tokens, first

    await one(-1, 0.0)  # warm-up
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i, ramp * i / args.streams) for i in range(args.streams)))
    seconds = time.perf_counter() - started
    return Result(label, sum(r[0] for r in results), seconds, [r[1] for r in results])


def start_server(
    args: argparse.Namespace, pepper: str, model_dir: Path | None, *, bare: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)]
    command += ["--token-delay", str(args.token_delay)]
    if model_dir is not None:
        command.append("--real")
    if bare:
        command.append("--bare")
    process = subprocess.Popen(command, env=server_env(args, pepper, model_dir), cwd=ROOT)
    return process, port


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def run_pairs(name: str, model: str, engine: Any, model_dir: Path | None, args: argparse.Namespace,
                    pepper: str, secret: str, prompt: str) -> list[tuple[Result, list[Result]]]:
    """Direct, then through Lexia (and, for the fake, a bare Litestar SSE server: the HTTP floor),
    for burst arrivals and for arrivals spread over --ramp seconds."""
    ramps = [0.0, args.ramp] if args.ramp > 0 else [0.0]
    try:
        baselines = [
            pooled([await direct(f"{name}|direct|{arrivals(r)}", engine, args, r, prompt) for _ in range(args.repeat)])
            for r in ramps
        ]
    finally:
        if model_dir is not None:
            await engine.aclose()  # free the CPU and memory for the server's own engine
    servers = [("bare Litestar SSE (HTTP floor)", True)] if model_dir is None else []
    servers.append(("through Lexia", False))
    served: list[list[Result]] = [[] for _ in ramps]
    for path, bare in servers:
        process, port = start_server(args, pepper, model_dir, bare=bare)
        try:
            await wait_ready(port, process, timeout=300 if model_dir else 60)
            for i, ramp in enumerate(ramps):
                label = f"{name}|{path}|{arrivals(ramp)}"
                runs = [await through_lexia(label, port, secret, model, args, ramp, prompt) for _ in range(args.repeat)]
                served[i].append(pooled(runs))
        finally:
            stop_server(process)
    return list(zip(baselines, served, strict=True))


def pooled(runs: list[Result]) -> Result:
    """Several runs of one configuration as one: summed tokens and seconds, every TTFT."""
    return Result(runs[0].label, sum(r.tokens for r in runs), sum(r.seconds for r in runs), [t for r in runs for t in r.ttft])


def arrivals(ramp: float) -> str:
    return "all at once" if ramp == 0 else f"spread over {ramp:g} s"


def table(groups: list[tuple[Result, list[Result]]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.streams} concurrent streams x {args.tokens} tokens, {args.repeat} runs pooled per row; FakeLLM at "
        f"{1 / args.token_delay:.0f} tokens/s per stream; Lexia = uvicorn + auth + rate limits + usage ledger; "
        "client = raw HTTP/1.1 on keep-alive connections; ratio and added TTFT are against the direct row",
        "",
        "| engine | arrivals | path | tokens | wall s | tokens/s | TTFT p50 ms | tokens/s ratio | added TTFT p50 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base, others in groups:
        for result in (base, *others):
            engine, path, when = result.label.split("|")
            ratio = added = ""
            if result is not base:
                ratio = f"{result.tokens_per_second / base.tokens_per_second:.3f}"
                added = f"{result.ttft_median_ms - base.ttft_median_ms:+.2f}"
            lines.append(
                f"| {engine} | {when} | {path} | {result.tokens} | {result.seconds:.2f} | "
                f"{result.tokens_per_second:,.0f} | {result.ttft_median_ms:.2f} | {ratio} | {added} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    from lexia.engines.fakes import FakeLLM

    pepper = secrets.token_urlsafe(48)
    secret = await create_key(pepper)
    fake = FakeLLM(FAKE_MODEL, token_delay=args.token_delay, context_length=8192)
    # The fake echoes the prompt, one token per word: it needs as many words as tokens.
    pairs = await run_pairs("FakeLLM", FAKE_MODEL, fake, None, args, pepper, secret, prompt_words(args.tokens))
    if args.real:
        pairs += await real_pairs(args, pepper, secret)
    report = table(pairs, args)
    print(report)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm.md").write_text(report + "\n")


async def real_pairs(args: argparse.Namespace, pepper: str, secret: str) -> list[tuple[Result, list[Result]]]:
    from lexia.engines.vllm import load
    from lexia.settings import LLMSettings
    from tests.tiny_llama import build_tiny_llama

    for name, value in real_engine_env(Path("."), args.streams).items():
        if name.startswith(("VLLM_", "HF_")):
            os.environ.setdefault(name, value)
    model_dir = build_tiny_llama(Path(tempfile.mkdtemp(prefix="lexia-bench-llama-")))
    settings = LLMSettings(
        model=str(model_dir),
        served_name=REAL_MODEL,
        max_model_len=1024,
        dtype="float32",
        enforce_eager=True,
        max_num_seqs=args.streams,
    )
    engine = await load(settings)
    # min_tokens = max_tokens makes every stream exactly --tokens long whatever the random model says.
    return await run_pairs(
        "tiny Llama on vLLM (CPU)", REAL_MODEL, engine, model_dir, args, pepper, secret, "Hello world, tell a story."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--token-delay", type=float, default=0.02, help="FakeLLM seconds per token (default 50 tokens/s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (pooled)")
    parser.add_argument("--ramp", type=float, default=1.0, help="also run with arrivals spread over this many seconds")
    parser.add_argument("--real", action="store_true", help="also benchmark the tiny Llama on vLLM (needs .venv-engines)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        serve(arguments)
    else:
        asyncio.run(main(arguments))
