"""faster-whisper (CTranslate2) speech-to-text: WhisperSTT and load(settings).

faster_whisper and ctranslate2 are imported only inside functions, so importing this module
costs nothing. The model is loaded once per process; each transcription runs in a worker thread
under a capacity limiter of LEXIA_STT_NUM_WORKERS, and faster-whisper's lazy segment generator
is consumed inside that thread. Hallucination guards are on by default: VAD (Silero, bundled),
no conditioning on previous text, and compression-ratio / log-probability / no-speech
thresholds with temperature fallback. Words are never dropped: a word without a usable timing
gets one interpolated from its neighbours and is flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio

from lexia.engines.base import Audio, EngineLoadError, ModelInfo, Segment, STTOptions, Transcript, Word, served_id
from lexia.engines.languages import WHISPER_LANGUAGES
from lexia.engines.models import STT_AUTO, require
from lexia.errors import EngineUnavailable
from lexia.settings import STTSettings

log = logging.getLogger("lexia.engines.whisper")

T = TypeVar("T")

# Whisper's reference thresholds (openai/whisper transcribe.py); a segment over the
# compression ratio or under the log-probability is decoded again at the next temperature.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
TEMPERATURE_STEP = 0.2
_HALF_PRECISION = ("float16", "bfloat16", "int8_float16", "int8_bfloat16")


@dataclass(frozen=True, slots=True)
class WhisperConfig:
    """The settings one WhisperSTT runs with (LEXIA_STT_*)."""

    model: str
    device: str = "auto"
    device_index: int = 0
    compute_type: str = "float16"
    cpu_threads: int = 0
    num_workers: int = 1
    beam_size: int = 5
    vad: bool = True
    batch_size: int = 1
    temperature_fallback: bool = True
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: STTSettings) -> WhisperConfig:
        """Read the LEXIA_STT_* settings."""
        return cls(
            model=settings.model,
            device=settings.device,
            device_index=settings.device_index,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=max(1, settings.num_workers),
            beam_size=max(1, settings.beam_size),
            vad=settings.vad,
            batch_size=max(1, settings.batch_size),
            temperature_fallback=settings.temperature_fallback,
            aliases=settings.model_aliases,
        )


def temperatures(temperature: float, fallback: bool) -> tuple[float, ...]:
    """The temperature schedule: t, t+0.2, … up to 1.0 with fallback, else t alone."""
    if not fallback:
        return (temperature,)
    steps = round((1.0 - temperature) / TEMPERATURE_STEP)
    return tuple(round(temperature + i * TEMPERATURE_STEP, 2) for i in range(max(0, steps) + 1))


def transcribe_kwargs(config: WhisperConfig, options: STTOptions) -> dict[str, Any]:
    """Exactly what is passed to faster-whisper's transcribe() for these options."""
    return {
        "language": options.language,
        "task": options.task,
        "beam_size": config.beam_size,
        "temperature": list(temperatures(options.temperature, config.temperature_fallback)),
        "compression_ratio_threshold": COMPRESSION_RATIO_THRESHOLD,
        "log_prob_threshold": LOG_PROB_THRESHOLD,
        "no_speech_threshold": NO_SPEECH_THRESHOLD,
        "condition_on_previous_text": False,
        "initial_prompt": options.prompt or None,
        "hotwords": " ".join(options.hotwords) or None,
        "word_timestamps": options.word_timestamps,
        "vad_filter": config.vad,
    }


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def repair_words(
    raw: Sequence[tuple[str, Any, Any, Any]], seg_start: float, seg_end: float, text: str = ""
) -> tuple[Word, ...]:
    """Words with usable timings; untimed ones are interpolated between neighbours and flagged.

    `raw` holds (text, start, end, probability). A timing is unusable when it is missing, not
    finite, negative, reversed or zero-length. If the engine gave no words for a segment that
    has text, the text's words are spread evenly over the segment, flagged as interpolated.
    """
    seg_end = max(seg_end, seg_start)
    if not raw and text.strip():
        raw = [(" " + w, None, None, None) for w in text.split()]
    timed: list[tuple[str, float | None, float | None, float]] = []
    for word, start, end, probability in raw:
        s, e, p = _finite(start), _finite(end), _finite(probability)
        ok = s is not None and e is not None and 0 <= s < e
        timed.append((word, s if ok else None, e if ok else None, min(1.0, max(0.0, p or 0.0))))
    words: list[Word] = []
    i = 0
    while i < len(timed):
        word, s, e, p = timed[i]
        if s is not None and e is not None:
            words.append(Word(word, round(s, 3), round(e, 3), p))
            i += 1
            continue
        j = i
        while j < len(timed) and timed[j][1] is None:
            j += 1
        left = words[-1].end if words else seg_start
        right_start = timed[j][1] if j < len(timed) else None
        right = right_start if right_start is not None else seg_end
        right = max(right, left)
        step = (right - left) / (j - i)
        for k in range(i, j):
            start = left + step * (k - i)
            words.append(Word(timed[k][0], round(start, 3), round(start + step, 3), timed[k][3], True))
        i = j
    return tuple(words)


def _clamp(value: Any, duration: float) -> float | None:
    number = _finite(value)
    return None if number is None else min(max(number, 0.0), duration)


def _segment(raw: Any, index: int, duration: float) -> Segment:
    # Timestamps past the end of the audio (a decoder hallucinating in the padded window) are
    # clamped to it, so every time the engine reports lies within the audio.
    start = _clamp(raw.start, duration) or 0.0
    end = max(start, _clamp(raw.end, duration) or start)
    words = repair_words(
        [(w.word, _clamp(w.start, duration), _clamp(w.end, duration), w.probability) for w in (raw.words or [])],
        start,
        end,
        raw.text if raw.words is not None else "",
    )
    return Segment(
        id=index,
        start=round(start, 3),
        end=round(end, 3),
        text=str(raw.text),
        words=words,
        tokens=tuple(int(t) for t in raw.tokens),
        seek=int(raw.seek),
        temperature=float(raw.temperature or 0.0),
        avg_logprob=float(raw.avg_logprob),
        compression_ratio=float(raw.compression_ratio),
        no_speech_prob=float(raw.no_speech_prob),
    )


class _Stopped(Exception):
    """The transcription was cancelled at a segment boundary."""


class WhisperSTT:
    """STTEngine over faster_whisper.WhisperModel (BatchedInferencePipeline when batch_size > 1)."""

    def __init__(self, model: Any, config: WhisperConfig) -> None:
        self._model: Any = model
        self._pipeline: Any = None
        if config.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self._pipeline = BatchedInferencePipeline(model)
        self.config = config
        served = served_id(config.model)
        self.model_ids: Sequence[str] = (served, *config.aliases)
        self._info = ModelInfo(id=served, kind="stt", created=int(time.time()), aliases=config.aliases)
        self._languages = {code: WHISPER_LANGUAGES.get(code, code) for code in model.supported_languages}
        self._limiter: anyio.CapacityLimiter | None = None

    def info(self) -> ModelInfo:
        """The served model."""
        return self._info

    def languages(self) -> Mapping[str, str]:
        """Code -> English name of every language the model knows (`en` alone for an English-only one)."""
        return self._languages

    def _run_blocking(  # noqa: PLR0917 (called positionally by anyio.to_thread.run_sync)
        self,
        audio: Audio,
        options: STTOptions,
        stop: threading.Event,
        notify: Callable[[Callable[[Any], None], Any], None],
        progress: Callable[[float], None] | None,
        on_segment: Callable[[Segment], None] | None,
    ) -> Transcript:
        model = self._model
        if model is None:
            raise EngineUnavailable("The STT engine is closed")
        kwargs = transcribe_kwargs(self.config, options)
        if self._pipeline is not None:
            generator, info = self._pipeline.transcribe(
                audio.samples, batch_size=self.config.batch_size, **kwargs
            )
        else:
            generator, info = model.transcribe(audio.samples, **kwargs)
        duration = audio.duration
        segments: list[Segment] = []
        done = 0.0
        for raw in generator:
            segment = _segment(raw, len(segments), duration)
            segments.append(segment)
            if on_segment is not None:
                notify(on_segment, segment)
            if progress is not None and duration > 0:
                done = max(done, min(1.0, segment.end / duration))  # never decreases
                notify(progress, done)
            if stop.is_set():
                raise _Stopped
        language = str(info.language)
        probability = 1.0 if options.language else float(info.language_probability)
        return Transcript(language, round(probability, 4), duration, tuple(segments))

    async def transcribe(
        self,
        audio: Audio,
        options: STTOptions,
        progress: Callable[[float], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        """Transcribe in a worker thread; cancelling stops at the next segment boundary."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.config.num_workers)
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def notify(callback: Callable[[Any], None], value: Any) -> None:
            loop.call_soon_threadsafe(callback, value)

        work = asyncio.ensure_future(
            anyio.to_thread.run_sync(
                self._run_blocking, audio, options, stop, notify, progress, on_segment, limiter=self._limiter
            )
        )
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()
            work.cancel()  # gives up a wait for the limiter; a running thread ends at its next segment
            with contextlib.suppress(BaseException):
                await work
            raise
        # Let callbacks scheduled from the thread run before the caller sees the result.
        await asyncio.sleep(0)
        return result

    async def check(self) -> None:
        """Raise EngineUnavailable once closed."""
        if self._model is None:
            raise EngineUnavailable("The STT engine is not loaded")

    async def aclose(self) -> None:
        """Drop the model (CTranslate2 frees its memory when the last reference goes)."""
        self._pipeline = None
        self._model = None


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def _resolve_compute_type(device: str, compute_type: str) -> str:
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type in supported or compute_type in ("default", "auto"):
        return compute_type
    fallback = "int8" if "int8" in supported else "default"
    if device == "cpu" and compute_type in _HALF_PRECISION:
        log.warning("LEXIA_STT_COMPUTE_TYPE=%s is not supported on CPU; using %s", compute_type, fallback)
    else:
        log.warning("LEXIA_STT_COMPUTE_TYPE=%s is not supported on %s; using %s", compute_type, device, fallback)
    return fallback


CUBLAS12 = ("libcublasLt.so.12", "libcublas.so.12")


def cublas12_files() -> list[Path]:
    """The CUDA 12 cuBLAS libraries of the nvidia-cublas-cu12 wheel (the gpu extra), in load order."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia.cublas")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for base in spec.submodule_search_locations:
        found += [Path(base) / "lib" / name for name in CUBLAS12 if (Path(base) / "lib" / name).exists()]
    return found


def _preload_cublas12() -> None:
    """ctranslate2 4.8 dlopens CUDA 12's libcublas.so.12 (torch brings CUDA 13's only): load the
    pip-installed copy before ctranslate2 needs it, and fail loudly when it cannot be loaded — on a
    GPU pod a silent fallback to the CPU would be 20x slower."""
    import ctypes

    for path in cublas12_files():
        with contextlib.suppress(OSError):
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    try:
        ctypes.CDLL("libcublas.so.12", mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise EngineLoadError(
            "Whisper on the GPU needs CUDA 12's cuBLAS (libcublas.so.12), which cannot be loaded "
            f"({exc}); install the gpu extra (`make install EXTRAS=dev,gpu`, it brings nvidia-cublas-cu12), "
            "or set LEXIA_STT_DEVICE=cpu"
        ) from exc


def build(config: WhisperConfig) -> WhisperSTT:
    """Load the model (blocking; call it in a thread)."""
    device = _resolve_device(config.device)
    if device == "cuda":
        _preload_cublas12()
    compute_type = _resolve_compute_type(device, config.compute_type)
    from faster_whisper import WhisperModel

    name = STT_AUTO["gpu" if device == "cuda" else "cpu"] if config.model in ("", "auto") else config.model
    config = replace(config, model=name)
    path = require("stt", name)  # never a silent download
    started = time.perf_counter()
    try:
        model = WhisperModel(
            str(path),
            device=device,
            device_index=config.device_index,
            compute_type=compute_type,
            cpu_threads=config.cpu_threads,
            num_workers=config.num_workers,
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True"),
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineLoadError(f"cannot load the STT model {config.model!r}: {exc}") from exc
    log.info(
        "STT model %s loaded on %s (%s) in %.1f s",
        config.model, device, compute_type, time.perf_counter() - started,
    )
    return WhisperSTT(model, replace(config, device=device, compute_type=compute_type))


async def load(settings: STTSettings) -> WhisperSTT:
    """open_engines' entry point: load the configured model off the event loop."""
    config = WhisperConfig.from_settings(settings)
    return await anyio.to_thread.run_sync(build, config)
