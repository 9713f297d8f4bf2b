"""Engine backends: one registry per engine kind, and open_engines() to load the configured ones.

A backend is a module with ``async def load(settings) -> Engine`` taking its kind's settings
section (LLMSettings, STTSettings or DiarizationSettings). It is imported only when it is
loaded, so heavy libraries stay out of a process that runs the fakes. Adding a backend is one
module and one line in BACKENDS; LEXIA_<KIND>_BACKEND picks it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from lexia.engines.base import EngineLoadError, Engines, ModelKind
from lexia.settings import EngineSettings

log = logging.getLogger("lexia.engines")


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a backend lives and the top-level packages it needs installed."""

    module: str
    needs: tuple[str, ...]


BACKENDS: dict[ModelKind, dict[str, Backend]] = {
    "llm": {"vllm": Backend("lexia.engines.vllm", ("vllm", "torch"))},
    "stt": {"whisper": Backend("lexia.engines.whisper", ("faster_whisper", "ctranslate2"))},
    "diarization": {
        "pyannote": Backend("lexia.engines.pyannote", ("pyannote.audio", "torch")),
        "lite": Backend("lexia.engines.lite", ("resemblyzer", "faster_whisper", "torch")),
    },
}
# Engine kind -> the Engines attribute that holds it.
SLOTS: dict[ModelKind, str] = {"llm": "llm", "stt": "stt", "diarization": "diarizer"}


def backend_for(kind: ModelKind, name: str) -> Backend:
    """The registered backend, or EngineLoadError naming the setting and the known names."""
    known = BACKENDS[kind]
    if name not in known:
        raise EngineLoadError(
            f"LEXIA_{kind.upper()}_BACKEND={name!r} is not a {kind} backend; known: {', '.join(sorted(known))}"
        )
    return known[name]


def installed(backend: Backend) -> bool:
    """True when every package the backend needs can be imported."""
    return all(importlib.util.find_spec(name.split(".")[0]) is not None for name in backend.needs)


def gpu_available() -> bool:
    """True when torch and vllm are installed and torch sees a CUDA device."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("vllm") is None:
        return False
    torch = importlib.import_module("torch")
    return bool(torch.cuda.is_available())


def resolve_mode(settings: EngineSettings) -> str:
    """`real` or `fake` for LEXIA_ENGINES=auto|real|fake."""
    if settings.mode != "auto":
        return settings.mode
    if gpu_available():
        return "real"
    log.warning(
        "LEXIA_ENGINES=auto: no CUDA device or [gpu] extra found, serving deterministic fake "
        "engines (set LEXIA_ENGINES=real to require real ones)"
    )
    return "fake"


def fake_engines(settings: EngineSettings) -> Engines:
    """Fakes for every enabled engine kind."""
    from lexia.engines.fakes import FakeDiarizer, FakeLLM, FakeSTT

    llm = settings.llm
    served = llm.served_name or (llm.model.rstrip("/").rsplit("/", 1)[-1] if llm.model else "lexia-fake-llm")
    engines = Engines(mode="fake")
    if llm.enabled:
        engines.llm = FakeLLM(served, aliases=llm.aliases, context_length=llm.max_model_len or 4096)
    if settings.stt.enabled:
        engines.stt = FakeSTT(aliases=settings.stt.model_aliases, delay=settings.fake_delay)
    if settings.diarization.enabled:
        engines.diarizer = FakeDiarizer(delay=settings.fake_delay)
    return engines


async def load_backend(kind: ModelKind, section: Any) -> Any:
    """Import the configured backend of one kind and load its engine."""
    backend = backend_for(kind, section.backend)
    if importlib.util.find_spec(backend.module) is None or not installed(backend):
        raise EngineLoadError(
            f"LEXIA_ENGINES=real: the {kind} backend {section.backend!r} needs {', '.join(backend.needs)}, "
            f"which this environment lacks; set LEXIA_{kind.upper()}_ENABLED=false or LEXIA_ENGINES=fake"
        )
    module = importlib.import_module(backend.module)
    return await module.load(section)


async def load_real(settings: EngineSettings) -> Engines:
    """Every enabled engine from its configured backend (closed again if a later one fails)."""
    engines = Engines(mode="real")
    try:
        for kind, slot in SLOTS.items():
            section = getattr(settings, kind)
            if section.enabled:
                setattr(engines, slot, await load_backend(kind, section))
    except BaseException:
        await engines.aclose()
        raise
    return engines


@contextlib.asynccontextmanager
async def open_engines(settings: EngineSettings) -> AsyncIterator[Engines]:
    """Load the engines for the process lifetime and close them on exit."""
    engines = fake_engines(settings) if resolve_mode(settings) == "fake" else await load_real(settings)
    engines.disabled = {kind for kind, enabled in settings.enabled().items() if not enabled}
    try:
        yield engines
    finally:
        await engines.aclose()
