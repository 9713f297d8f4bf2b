"""Engine selection: open_engines(settings) loads real engines or deterministic fakes."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lexia.engines.base import Diarizer, LLMEngine, ModelInfo, STTEngine
from lexia.settings import EngineSettings

log = logging.getLogger("lexia.engines")


class EngineLoadError(RuntimeError):
    """An engine could not be loaded at startup."""


@dataclass
class Engines:
    """The engines of one process; None where disabled."""

    llm: LLMEngine | None = None
    stt: STTEngine | None = None
    diarizer: Diarizer | None = None
    mode: str = "fake"
    disabled: set[str] = field(default_factory=set)

    def models(self) -> list[ModelInfo]:
        """Every served model, LLM first."""
        return [e.info() for e in (self.llm, self.stt, self.diarizer) if e is not None]

    def find_model(self, name: str, kind: str | None = None) -> ModelInfo | None:
        """The model whose id or alias is `name` (optionally of one kind)."""
        for info in self.models():
            if (kind is None or info.kind == kind) and (name == info.id or name in info.aliases):
                return info
        return None

    async def aclose(self) -> None:
        """Shut every engine down."""
        for engine in (self.diarizer, self.stt, self.llm):
            if engine is not None:
                with contextlib.suppress(Exception):
                    await engine.aclose()


def gpu_available() -> bool:
    """True when the gpu extra is installed and torch sees a CUDA device."""
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

    served = settings.llm_served_name or (
        settings.llm_model.rstrip("/").rsplit("/", 1)[-1] if settings.llm_model else "lexia-fake-llm"
    )
    engines = Engines(mode="fake")
    if settings.llm_enabled:
        engines.llm = FakeLLM(
            served,
            aliases=settings.llm_aliases,
            context_length=settings.llm_max_model_len or 4096,
        )
    if settings.stt_enabled:
        # FakeSTT emits one segment per 5 s of audio; LEXIA_FAKE_ENGINE_DELAY is per audio second.
        engines.stt = FakeSTT(aliases=settings.stt_model_aliases, segment_delay=5 * settings.fake_delay)
    if settings.diarization_enabled:
        engines.diarizer = FakeDiarizer(delay=settings.fake_delay)
    return engines


async def _load_real(settings: EngineSettings) -> Engines:
    engines = Engines(mode="real")
    wanted = [
        ("llm", settings.llm_enabled, "lexia.engines.vllm"),
        ("stt", settings.stt_enabled, "lexia.engines.whisper"),
        ("diarization", settings.diarization_enabled, "lexia.engines.pyannote"),
    ]
    for kind, enabled, module_name in wanted:
        if not enabled:
            continue
        if importlib.util.find_spec(module_name) is None:
            raise EngineLoadError(
                f"LEXIA_ENGINES=real: this build has no real {kind} engine ({module_name}); "
                f"set LEXIA_{kind.upper()}_ENABLED=false or LEXIA_ENGINES=fake"
            )
        module = importlib.import_module(module_name)
        engine = await module.load(settings)
        if kind == "llm":
            engines.llm = engine
        elif kind == "stt":
            engines.stt = engine
        else:
            engines.diarizer = engine
    return engines


@contextlib.asynccontextmanager
async def open_engines(settings: EngineSettings) -> AsyncIterator[Engines]:
    """Load the engines for the process lifetime and close them on exit."""
    mode = resolve_mode(settings)
    engines = fake_engines(settings) if mode == "fake" else await _load_real(settings)
    engines.disabled = {
        kind
        for kind, enabled in (
            ("llm", settings.llm_enabled),
            ("stt", settings.stt_enabled),
            ("diarization", settings.diarization_enabled),
        )
        if not enabled
    }
    try:
        yield engines
    finally:
        await engines.aclose()
