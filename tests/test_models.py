"""Models as a step of their own (lexia.engines.models, bin/lexia-models) and LEXIA_ENGINES=auto
choosing each engine by what is installed and on disk: a hand-made Hugging Face cache, no network."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lexia.engines import models, registry
from lexia.engines.base import EngineLoadError
from lexia.settings import load_settings
from tests.conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]


def cache_repo(cache: Path, repo: str, commit: str, files: dict[str, bytes], *, main: bool = True) -> Path:
    """A snapshot laid out as huggingface_hub keeps it: blobs named by their hash, links, refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    for name, content in files.items():
        lfs = len(content) > 64
        digest = hashlib.sha256(content).hexdigest() if lfs else hashlib.sha1(
            b"blob %d\0" % len(content) + content, usedforsecurity=False
        ).hexdigest()
        blob = folder / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    if main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local hub cache and lock file for this test; offline."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LEXIA_MODELS_LOCK", str(tmp_path / "models.lock.json"))
    return cache


def engine_settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({**BASE_ENV, **env}).engines


def test_a_model_setting_is_a_path_a_hub_id_or_a_whisper_size(tmp_path: Path) -> None:
    assert models.need("stt", "base").repo == "Systran/faster-whisper-base"
    assert models.need("stt", "large-v3").repo == "Systran/faster-whisper-large-v3"
    assert models.need("llm", "Qwen/Qwen2.5-7B-Instruct").repo == "Qwen/Qwen2.5-7B-Instruct"
    local = models.need("stt", str(tmp_path))
    assert local.repo is None and local.path == tmp_path
    assert models.stt_model(engine_settings(), gpu=False) == "base"
    assert models.stt_model(engine_settings(), gpu=True) == "large-v3"
    assert models.stt_model(engine_settings(LEXIA_STT_MODEL="small"), gpu=False) == "small"


def test_needs_lists_what_the_enabled_engines_load() -> None:
    wanted = models.needs(engine_settings(LEXIA_LLM_MODEL="org/llm"), gpu=False)
    assert [(n.kind, n.name) for n in wanted] == [
        ("llm", "org/llm"), ("stt", "base"), ("diarization", "pyannote/speaker-diarization-community-1")
    ]
    lite = engine_settings(LEXIA_DIARIZATION_BACKEND="lite", LEXIA_LLM_ENABLED="false")
    assert [n.kind for n in models.needs(lite, gpu=True)] == ["stt"]  # lite ships its weights


def test_locate_finds_the_cache_and_follows_the_lock(hub: Path) -> None:
    old = cache_repo(hub, "org/llm", "a" * 40, {"config.json": b"{}"}, main=False)
    new = cache_repo(hub, "org/llm", "b" * 40, {"config.json": b'{"v": 2}'})
    item = models.need("llm", "org/llm")
    assert models.locate(item) == new  # refs/main
    models.write_lock("org/llm", "a" * 40)
    assert models.read_lock() == {"org/llm": "a" * 40}
    assert models.locate(item) == old  # the pulled commit wins
    assert models.locate(models.need("llm", "org/absent")) is None


def test_require_names_the_command_that_fetches_a_missing_model(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match=r"not on this machine; fetch it with `bin/lexia-models pull stt`"):
        models.require("stt", "base")
    with pytest.raises(EngineLoadError, match="no such file or directory"):
        models.require("stt", str(tmp_path / "gone"))
    snapshot = cache_repo(hub, "Systran/faster-whisper-base", "c" * 40, {"model.bin": b"x" * 100})
    assert models.require("stt", "base") == snapshot


def test_verify_rehashes_every_file(hub: Path) -> None:
    snapshot = cache_repo(hub, "org/m", "d" * 40, {"config.json": b"{}", "model.bin": b"w" * 1000, "sub/t.json": b"[]"})
    assert models.verify(snapshot) == []
    (snapshot / "model.bin").resolve().write_bytes(b"w" * 999 + b"X")  # a corrupted download
    (snapshot / "sub" / "t.json").resolve().unlink()
    assert models.verify(snapshot) == [
        "model.bin: content does not match its hash", "sub/t.json: missing (a broken link)"
    ]


def test_the_command_lists_verifies_and_refuses_to_pull_offline(hub: Path, tmp_path: Path) -> None:
    cache_repo(hub, "Systran/faster-whisper-base", "e" * 40, {"model.bin": b"m" * 200})
    env = {**os.environ, **BASE_ENV, "LEXIA_LLM_ENABLED": "false", "LEXIA_DIARIZATION_BACKEND": "lite"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lexia.engines.models", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)

    listed = run("list")
    assert listed.returncode == 0 and "stt          base (Systran/faster-whisper-base)" in listed.stdout
    assert run("verify").stdout.strip() == "stt: base: ok"
    assert run("pull", "--missing").returncode == 0  # nothing missing: nothing fetched
    env["LEXIA_STT_MODEL"] = "small"
    pulled = run("pull", "stt")
    assert pulled.returncode == 1 and "failed" in pulled.stderr  # offline: says so, no traceback
    assert "Traceback" not in pulled.stderr
    assert run("list").returncode == 1 and "missing: `bin/lexia-models pull stt`" in run("list").stdout
    assert run("pull", "nope").returncode == 2


def test_auto_takes_each_engine_that_can_run_and_says_why_the_others_are_fakes(
    hub: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(registry, "gpu_available", lambda: False)
    monkeypatch.setattr(registry, "installed", lambda backend: backend.module != "lexia.engines.vllm")
    cache_repo(hub, "Systran/faster-whisper-base", "f" * 40, {"model.bin": b"m" * 200})
    with caplog.at_level(logging.WARNING, "lexia.engines"):
        settings, real = registry.choose(engine_settings(LEXIA_ENGINES="auto", LEXIA_LLM_MODEL="org/llm"))
    assert real == {"llm": False, "stt": True, "diarization": True}
    assert settings.diarization.backend == "lite"  # pyannote's weights are not here
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("LEXIA_ENGINES=auto: real stt, diarization; fake llm: vllm needs vllm, torch")
    assert "diarization on the lite backend (pyannote: its model" in line
    cache_repo(hub, "pyannote/speaker-diarization-community-1", "1" * 40, {"config.yaml": b"x: 1"})
    settings, real = registry.choose(engine_settings(LEXIA_ENGINES="auto"))
    assert settings.diarization.backend == "pyannote" and real["diarization"]


def test_explicit_modes_do_not_look_around() -> None:
    assert registry.choose(engine_settings(LEXIA_ENGINES="fake"))[1] == {"llm": False, "stt": False, "diarization": False}
    real = registry.choose(engine_settings(LEXIA_ENGINES="real", LEXIA_LLM_ENABLED="false"))[1]
    assert real == {"stt": True, "diarization": True}


def test_the_profile_picks_the_environment() -> None:
    def profile(name: str) -> str:
        done = subprocess.run([str(ROOT / "bin" / "profile"), name], capture_output=True, text=True, check=False)
        return done.stdout.strip() or done.stderr.strip()

    assert profile("cpu") == "cpu .venv-engines" and profile("gpu") == "gpu .venv" and profile("fake") == "fake .venv"
    assert profile("auto") in ("cpu .venv-engines", "gpu .venv")
    assert profile("tpu").startswith("unknown PROFILE=tpu")
