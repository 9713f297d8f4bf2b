"""pyannote.audio speaker diarization: PyannoteDiarizer and load(settings).

torch and pyannote are imported only inside functions, so importing this module costs nothing.
The pipeline (a hub id or a local path, LEXIA_DIARIZATION_MODEL) is loaded once per process with
`Pipeline.from_pretrained` (HF_HUB_OFFLINE and HF_TOKEN are honoured by huggingface_hub) and
moved to LEXIA_DIARIZATION_DEVICE (`auto` = CUDA when torch sees one, else CPU). Each run gets
the audio in memory as a (channel, time) tensor, never a file path, runs in a worker thread
under a limiter of one, and can be cancelled: the pipeline's progress hook stops it at its next
step. The output Annotation (pyannote 4 wraps it in DiarizeOutput.speaker_diarization) becomes
SpeakerTurns clamped to the audio and sorted by start.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from lexia.engines.base import Audio, Diarized, DiarizeOptions, EngineLoadError, ModelInfo, SpeakerTurn, served_id
from lexia.engines.models import require
from lexia.engines.threads import Stopped, run_stoppable
from lexia.errors import EngineUnavailable
from lexia.settings import DiarizationSettings

log = logging.getLogger("lexia.engines.pyannote")


@dataclass(frozen=True, slots=True)
class PyannoteConfig:
    """The settings one PyannoteDiarizer runs with (LEXIA_DIARIZATION_*)."""

    model: str
    device: str = "auto"
    max_speakers: int | None = None  # upper bound used when a request gives no speaker count

    @classmethod
    def from_settings(cls, settings: DiarizationSettings) -> PyannoteConfig:
        """Read the LEXIA_DIARIZATION_* settings."""
        return cls(
            model=settings.model,
            device=settings.device,
            max_speakers=settings.max_speakers if settings.max_speakers > 0 else None,
        )


def speaker_kwargs(options: DiarizeOptions, default_max: int | None = None) -> dict[str, int]:
    """The speaker-count keywords passed to the pipeline for these options.

    `num_speakers` wins over the bounds (pyannote ignores them then); otherwise the request's
    bounds are passed, with `default_max` as the upper bound when the request gives none.
    """
    if options.num_speakers:
        return {"num_speakers": options.num_speakers}
    kwargs: dict[str, int] = {}
    if options.min_speakers:
        kwargs["min_speakers"] = options.min_speakers
    maximum = options.max_speakers or default_max
    if maximum:
        kwargs["max_speakers"] = max(maximum, kwargs.get("min_speakers", 1))
    return kwargs


def to_turns(output: Any, duration: float) -> list[SpeakerTurn]:
    """SpeakerTurns from a pipeline output (DiarizeOutput or Annotation), clamped and sorted."""
    annotation = getattr(output, "speaker_diarization", output)
    turns: list[SpeakerTurn] = []
    for segment, _track, label in annotation.itertracks(yield_label=True):
        start, end = float(segment.start), float(segment.end)
        if not (math.isfinite(start) and math.isfinite(end)):
            continue
        start = round(min(max(start, 0.0), duration), 3)
        end = round(min(max(end, 0.0), duration), 3)
        if start < end:
            turns.append(SpeakerTurn(str(label), start, end))
    turns.sort(key=lambda t: (t.start, t.end, t.speaker))
    return turns


class PyannoteDiarizer:
    """Diarizer over a pyannote.audio pipeline (anything callable like SpeakerDiarization)."""

    def __init__(self, pipeline: Any, config: PyannoteConfig, *, served: str | None = None) -> None:
        self._pipeline: Any = pipeline
        self.config = config
        served = served or served_id(config.model)
        self.model_ids: Sequence[str] = (served,)
        self._info = ModelInfo(id=served, kind="diarization", created=int(time.time()))
        self._limiter: anyio.CapacityLimiter | None = None

    def info(self) -> ModelInfo:
        """The served pipeline."""
        return self._info

    def _run_blocking(self, audio: Audio, kwargs: dict[str, int], stop: threading.Event) -> list[SpeakerTurn]:
        pipeline = self._pipeline
        if pipeline is None:
            raise EngineUnavailable("The diarization engine is closed")
        import torch

        samples = np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(-1)
        waveform = torch.from_numpy(samples)[None]

        def hook(*_args: Any, **_kwargs: Any) -> None:
            if stop.is_set():
                raise Stopped

        output = pipeline({"waveform": waveform, "sample_rate": audio.sample_rate}, hook=hook, **kwargs)
        return to_turns(output, audio.duration)

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> Diarized:
        """Speaker turns sorted by start; cancelling stops the pipeline at its next step. The pipeline
        gives no confidence for its speaker count (1.0 when the request fixed it)."""
        await self.check()
        confidence = 1.0 if options.num_speakers else None
        if len(audio.samples) == 0:
            return Diarized([], confidence)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        kwargs = speaker_kwargs(options, self.config.max_speakers)
        return Diarized(await run_stoppable(self._limiter, self._run_blocking, audio, kwargs), confidence)

    async def check(self) -> None:
        """Raise EngineUnavailable when not loaded or closed."""
        if self._pipeline is None:
            raise EngineUnavailable("The diarization engine is not loaded")

    async def aclose(self) -> None:
        """Drop the pipeline and give cached GPU memory back."""
        self._pipeline = None
        torch = sys.modules.get("torch")
        if torch is not None and self.config.device.startswith("cuda"):
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build(config: PyannoteConfig) -> PyannoteDiarizer:
    """Load the pipeline and move it to its device (blocking; call it in a thread)."""
    started = time.perf_counter()
    try:
        import torch
        from pyannote.audio import Pipeline

        device = _resolve_device(config.device)
        source = require("diarization", config.model)  # never a silent download
        pipeline = Pipeline.from_pretrained(str(source), token=os.environ.get("HF_TOKEN") or None)
        if pipeline is None:
            raise EngineLoadError(
                f"cannot load the diarization pipeline {config.model!r}: not found or access refused "
                "(accept its conditions on the hub and set HF_TOKEN, or give a local path)"
            )
        pipeline.to(torch.device(device))
    except EngineLoadError:
        raise
    except Exception as exc:  # hub, file, YAML and torch errors all mean "cannot load"
        raise EngineLoadError(f"cannot load the diarization pipeline {config.model!r}: {exc}") from exc
    log.info("diarization pipeline %s loaded on %s in %.1f s", config.model, device, time.perf_counter() - started)
    return PyannoteDiarizer(pipeline, PyannoteConfig(config.model, device, config.max_speakers))


async def load(settings: DiarizationSettings) -> PyannoteDiarizer:
    """open_engines' entry point: load the configured pipeline off the event loop."""
    return await anyio.to_thread.run_sync(build, PyannoteConfig.from_settings(settings))
