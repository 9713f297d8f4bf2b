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

import msgspec

from lexia.engines import models
from lexia.engines.base import EngineLoadError, Engines, ModelKind
from lexia.engines.models import gpu_available
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


def unavailable(kind: ModelKind, settings: EngineSettings, *, gpu: bool) -> str | None:
    """Why the enabled engine of this kind cannot run real here (None when it can): its backend's
    packages are missing, or its model is not configured or not on this machine."""
    section = getattr(settings, kind)
    backend = backend_for(kind, section.backend)
    if not installed(backend):
        return f"{section.backend} needs {', '.join(backend.needs)} (`make start PROFILE=cpu`, or PROFILE=gpu)"
    if kind == "llm" and not settings.llm.model:
        return "LEXIA_LLM_MODEL is not set"
    for item in models.needs(settings, gpu=gpu):
        if item.kind == kind and models.locate(item) is None:
            hint = ", or LEXIA_DIARIZATION_BACKEND=lite: nothing to download" if kind == "diarization" else ""
            return f"its model {item.name!r} is not on this machine (`{item.command}`{hint})"
    return None


def choose(settings: EngineSettings) -> tuple[EngineSettings, dict[ModelKind, bool]]:
    """For each enabled kind, real (True) or fake, and the settings to load them with.

    LEXIA_ENGINES=auto takes every engine that can run here, on a GPU or on the CPU, and says in
    one warning line which ones are fakes and why. When the default pyannote diarizer's weights
    are not here but the lite backend is installed, auto diarizes with lite (nothing to download).
    """
    kinds = [kind for kind in SLOTS if getattr(settings, kind).enabled]
    if settings.mode != "auto":
        return settings, dict.fromkeys(kinds, settings.mode == "real")
    gpu = gpu_available()
    reasons = {kind: unavailable(kind, settings, gpu=gpu) for kind in kinds}
    notes = []
    if reasons.get("diarization") and settings.diarization.backend == "pyannote":
        lite = msgspec.structs.replace(settings.diarization, backend="lite")
        candidate = msgspec.structs.replace(settings, diarization=lite)
        if unavailable("diarization", candidate, gpu=gpu) is None:
            notes.append(f"diarization on the lite backend (pyannote: {reasons['diarization']})")
            settings, reasons["diarization"] = candidate, None
    missing = {kind: why for kind, why in reasons.items() if why}
    if missing or notes:
        real = ", ".join(k for k in kinds if k not in missing) or "none"
        fakes = "".join(f"; fake {k}: {why}" for k, why in missing.items())
        log.warning("LEXIA_ENGINES=auto: real %s%s%s", real, fakes, "".join(f"; {n}" for n in notes))
    return settings, {kind: kind not in missing for kind in kinds}


def fake_engine(kind: ModelKind, settings: EngineSettings) -> Any:
    """The deterministic fake of one kind."""
    from lexia.engines.fakes import FakeDiarizer, FakeLLM, FakeSTT

    if kind == "llm":
        llm = settings.llm
        served = llm.served_name or (llm.model.rstrip("/").rsplit("/", 1)[-1] if llm.model else "lexia-fake-llm")
        return FakeLLM(served, aliases=llm.aliases, context_length=llm.max_model_len or 4096)
    if kind == "stt":
        return FakeSTT(aliases=settings.stt.model_aliases, delay=settings.fake_delay)
    return FakeDiarizer(delay=settings.fake_delay)


def fake_engines(settings: EngineSettings) -> Engines:
    """Fakes for every enabled engine kind."""
    engines = Engines(mode="fake")
    for kind, slot in SLOTS.items():
        if getattr(settings, kind).enabled:
            setattr(engines, slot, fake_engine(kind, settings))
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


def check_memory(settings: EngineSettings, real: dict[ModelKind, bool]) -> None:
    """On a GPU, refuse a plan of the real engines that cannot fit the card before loading any of
    them (EngineLoadError naming the setting to change; `bin/lexia-plan` prints the whole table)."""
    if not any(real.values()) or not gpu_available():
        return
    from lexia.engines.plan import detect_card_bytes, load_llm_config, plan_for

    card = detect_card_bytes()
    if card is None:
        return
    sections = {k: msgspec.structs.replace(getattr(settings, k), enabled=real.get(k, False)) for k in SLOTS}
    counted = msgspec.structs.replace(settings, **sections)
    llm_config = load_llm_config(settings.llm.model) if real.get("llm") else None
    plan = plan_for(counted, card, llm_config=llm_config)
    plan.check()
    log.info("GPU memory plan fits: %.1f GiB card (bin/lexia-plan prints it)", card / (1 << 30))


async def load_engines(settings: EngineSettings, real: dict[ModelKind, bool]) -> Engines:
    """Each enabled engine, real from its configured backend or a fake (closed again if one fails).
    `mode` is `real`, `fake`, or `mixed` (e.g. `mixed (real: stt, diarization)`)."""
    chosen = [kind for kind, is_real in real.items() if is_real]
    mode = "fake" if not chosen else "real" if len(chosen) == len(real) else f"mixed (real: {', '.join(chosen)})"
    engines = Engines(mode=mode)
    try:
        for kind, is_real in real.items():
            section = getattr(settings, kind)
            engine = await load_backend(kind, section) if is_real else fake_engine(kind, settings)
            setattr(engines, SLOTS[kind], engine)
    except BaseException:
        await engines.aclose()
        raise
    return engines


@contextlib.asynccontextmanager
async def open_engines(settings: EngineSettings) -> AsyncIterator[Engines]:
    """Load the engines for the process lifetime and close them on exit."""
    settings, real = choose(settings)
    check_memory(settings, real)
    engines = await load_engines(settings, real)
    engines.disabled = {kind for kind, enabled in settings.enabled().items() if not enabled}
    try:
        yield engines
    finally:
        await engines.aclose()
