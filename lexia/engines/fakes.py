"""Deterministic CPU fakes of every engine, for development, tests and benchmarks.

FakeLLM (echo, JSON mode, tool calls, pacing, failure injection) lives in
lexia.engines.fake_llm and is re-exported here; its module docstring documents its semantics.

FakeSTT: one word per 0.5 s of audio ("lexia", "fake", "word", …), one segment per 5 s; each
segment reads as a sentence (first word capitalised, a period after the last), like Whisper's.
FakeDiarizer: speakers alternate every 2 s of audio.

Both take an optional processing delay in seconds of wall time per second of audio (`delay`),
set from LEXIA_FAKE_ENGINE_DELAY by fake_engines(), so progress, cancellation and worker crashes
can be exercised mid-job; FakeSTT's delay is spent segment by segment, each in proportion to the
audio it covers, and tests may add a fixed `segment_delay` per segment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from lexia.engines.base import (
    Audio,
    Diarized,
    DiarizeOptions,
    ModelInfo,
    Segment,
    SpeakerTurn,
    STTOptions,
    Transcript,
    Word,
)
from lexia.engines.fake_llm import FakeLLM
from lexia.engines.languages import WHISPER_LANGUAGES

__all__ = ["FakeDiarizer", "FakeLLM", "FakeSTT"]

FAKE_WORDS = ("lexia", "fake", "word", "speech", "test", "audio", "sample", "voice")


class FakeSTT:
    """Words whose timings follow the audio's duration, shaped like Whisper's output."""

    def __init__(
        self,
        model_id: str = "lexia-fake-stt",
        *,
        aliases: Sequence[str] = ("whisper-1",),
        segment_delay: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        self.model_ids: Sequence[str] = (model_id, *aliases)
        self._info = ModelInfo(id=model_id, kind="stt", created=int(time.time()), aliases=tuple(aliases))
        self.segment_delay = segment_delay  # fixed wall time per segment
        self.delay = delay  # wall time per second of audio

    def info(self) -> ModelInfo:
        """The fake model."""
        return self._info

    def languages(self) -> Mapping[str, str]:
        """Every Whisper language."""
        return WHISPER_LANGUAGES

    async def transcribe(
        self,
        audio: Audio,
        options: STTOptions,
        progress: Callable[[float], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        """One word per 0.5 s, one segment per 5 s; a segment is a capitalised sentence."""
        duration = audio.duration
        words = [
            Word(FAKE_WORDS[i % len(FAKE_WORDS)], round(i * 0.5, 3), round(i * 0.5 + 0.4, 3), 0.9)
            for i in range(int(duration / 0.5))
        ]
        segments: list[Segment] = []
        for start in range(0, max(1, int(duration) + 1), 5):
            group = [w for w in words if start <= w.start < start + 5]
            if not group:
                continue
            group[0] = replace(group[0], text=group[0].text.capitalize())
            group[-1] = replace(group[-1], text=group[-1].text + ".")
            text = "".join(" " + w.text for w in group)
            segment = Segment(len(segments), group[0].start, group[-1].end, text, tuple(group))
            wait = self.segment_delay + self.delay * (min(start + 5, duration) - start)
            if wait > 0:
                await asyncio.sleep(wait)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if progress is not None:
                progress(min(1.0, segment.end / duration))
            await asyncio.sleep(0)
        language = options.language or "en"
        return Transcript(language, 1.0 if options.language else 0.99, duration, tuple(segments))

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""


class FakeDiarizer:
    """Speakers alternate every 2 s (up to max_speakers, default 2)."""

    def __init__(self, model_id: str = "lexia-fake-diarization", *, delay: float = 0.0) -> None:
        self.model_ids: Sequence[str] = (model_id,)
        self._info = ModelInfo(id=model_id, kind="diarization", created=int(time.time()))
        self.delay = delay  # seconds of wall time per second of audio

    def info(self) -> ModelInfo:
        """The fake pipeline."""
        return self._info

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> Diarized:
        """Alternating 2 s turns; the count's confidence is 1.0 when given, else 0.5."""
        if self.delay:
            await asyncio.sleep(self.delay * audio.duration)
        count = options.num_speakers or options.max_speakers or 2
        count = max(count, options.min_speakers or 1)
        turns = []
        start = 0.0
        i = 0
        while start < audio.duration:
            end = min(audio.duration, start + 2.0)
            turns.append(SpeakerTurn(f"SPEAKER_{i % count:02d}", round(start, 3), round(end, 3)))
            start, i = end, i + 1
        return Diarized(turns, 1.0 if options.num_speakers else 0.5)

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""
