"""Deterministic CPU fakes of every engine, for development, tests and benchmarks.

FakeLLM: the completion is the last user message (or the prompt) echoed word by word; each
word is one token and every word after the first keeps its leading space. Prompt tokens = the
whitespace-separated words of every message plus 3 per message (the prompt's words for
completions). `max_tokens` cuts with finish_reason "length"; a stop string cuts the text before
it with "stop". Every one of the `n` choices carries the same text.

FakeSTT: one word per 0.5 s of audio ("lexia", "fake", "word", …), one segment per 5 s.
FakeDiarizer: speakers alternate every 2 s of audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from lexia.engines.base import (
    Audio,
    DiarizeOptions,
    LLMChunk,
    LLMRequest,
    ModelInfo,
    Segment,
    SpeakerTurn,
    STTOptions,
    Transcript,
    Word,
)

MESSAGE_OVERHEAD_TOKENS = 3
FAKE_WORDS = ("lexia", "fake", "word", "speech", "test", "audio", "sample", "voice")


def message_text(content: Any) -> str:
    """The text of a message content: a string, None or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def fake_tokens(text: str) -> list[str]:
    """Split into word tokens; every token after the first keeps one leading space."""
    words = text.split()
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeLLM:
    """Echoes the last user message word by word at an optional fixed token rate."""

    def __init__(
        self,
        model_id: str = "lexia-fake-llm",
        *,
        aliases: Sequence[str] = (),
        context_length: int = 4096,
        token_delay: float = 0.0,
    ) -> None:
        self.model_ids = (model_id, *aliases)
        self._info = ModelInfo(
            id=model_id,
            kind="llm",
            created=int(time.time()),
            aliases=tuple(aliases),
            context_length=context_length,
        )
        self.token_delay = token_delay

    def info(self) -> ModelInfo:
        """The fake model."""
        return self._info

    def count_prompt(self, request: LLMRequest) -> int:
        """Prompt tokens as documented in the module docstring."""
        if request.messages is not None:
            return sum(
                len(message_text(m.get("content")).split()) + MESSAGE_OVERHEAD_TOKENS
                for m in request.messages
            )
        return len((request.prompt or "").split())

    @staticmethod
    def _source(request: LLMRequest) -> str:
        if request.messages is None:
            return request.prompt or ""
        for message in reversed(request.messages):
            if message.get("role") == "user":
                return message_text(message.get("content"))
        return ""

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """Yield one chunk per token per choice, then a finish chunk per choice."""
        prompt_tokens = self.count_prompt(request)
        tokens = fake_tokens(self._source(request))
        limit = request.max_tokens if request.max_tokens is not None else len(tokens)
        completion = 0
        for index in range(request.n):
            text, finish = "", "stop"
            for i, token in enumerate(tokens):
                if i >= limit:
                    finish = "length"
                    break
                candidate = text + token
                cut = min((candidate.find(s) for s in request.stop if s in candidate), default=-1)
                if cut >= 0:
                    if cut > len(text):
                        completion += 1
                        yield LLMChunk(index, candidate[len(text):cut], prompt_tokens=prompt_tokens,
                                       completion_tokens=completion)
                    break
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                completion += 1
                text = candidate
                yield LLMChunk(index, token, prompt_tokens=prompt_tokens, completion_tokens=completion)
            yield LLMChunk(
                index, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion
            )

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""


class FakeSTT:
    """Words whose timings follow the audio's duration."""

    def __init__(self, model_id: str = "lexia-fake-stt", *, aliases: Sequence[str] = ("whisper-1",)) -> None:
        self.model_ids = (model_id, *aliases)
        self._info = ModelInfo(id=model_id, kind="stt", created=int(time.time()), aliases=tuple(aliases))

    def info(self) -> ModelInfo:
        """The fake model."""
        return self._info

    async def transcribe(
        self,
        audio: Audio,
        options: STTOptions,
        progress: Callable[[float], None] | None = None,
    ) -> Transcript:
        """One word per 0.5 s, one segment per 5 s of audio."""
        duration = audio.duration
        words = [
            Word(FAKE_WORDS[i % len(FAKE_WORDS)], round(i * 0.5, 3), round(i * 0.5 + 0.4, 3), 0.9)
            for i in range(int(duration / 0.5))
        ]
        segments = []
        for seg_id, start in enumerate(range(0, max(1, int(duration) + 1), 5)):
            group = tuple(w for w in words if start <= w.start < start + 5)
            if not group:
                continue
            text = "".join(" " + w.text for w in group)
            segments.append(Segment(seg_id, group[0].start, group[-1].end, text, group))
            if progress is not None:
                progress(min(1.0, group[-1].end / duration))
            await asyncio.sleep(0)
        return Transcript(options.language or "en", 0.99, duration, tuple(segments))

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""


class FakeDiarizer:
    """Speakers alternate every 2 s (up to max_speakers, default 2)."""

    def __init__(self, model_id: str = "lexia-fake-diarization") -> None:
        self.model_ids = (model_id,)
        self._info = ModelInfo(id=model_id, kind="diarization", created=int(time.time()))

    def info(self) -> ModelInfo:
        """The fake pipeline."""
        return self._info

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> list[SpeakerTurn]:
        """Alternating 2 s turns."""
        count = options.num_speakers or options.max_speakers or 2
        count = max(count, options.min_speakers or 1)
        turns = []
        start = 0.0
        i = 0
        while start < audio.duration:
            end = min(audio.duration, start + 2.0)
            turns.append(SpeakerTurn(f"SPEAKER_{i % count:02d}", round(start, 3), round(end, 3)))
            start, i = end, i + 1
        return turns

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""
