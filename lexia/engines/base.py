"""Engine Protocols and the value types they exchange (no HTTP, no wire types, no database)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from lexia.errors import ContextLengthExceeded

ModelKind = Literal["llm", "stt", "diarization"]
ModelStatus = Literal["ready", "loading", "unavailable", "disabled"]


class EngineLoadError(RuntimeError):
    """An engine could not be loaded at startup (the message says what to change)."""


def served_id(model: str) -> str:
    """The id a model is served under: its name as given, or the last part of a local path."""
    return Path(model.rstrip("/")).name if ("/" in model and Path(model).exists()) else model


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model as listed by /v1/models."""

    id: str
    kind: ModelKind
    created: int
    aliases: tuple[str, ...] = ()
    context_length: int | None = None
    status: ModelStatus = "ready"


# -- LLM ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call: the first carries id and name, later ones argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """Log-probability of one generated token and its top alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One validated generation request; messages are role/content dicts with string content.

    `tool_choice` is "none", "auto", "required" or the name of one function (forced).
    `response_format` is {"type": "json_object"} or {"type": "json_schema", "schema": {...}}.
    `stream` tells the engine whether the caller consumes chunks as they come (True) or only the
    aggregate (False), so it may pick a cheaper output mode; the chunks' meaning is the same.
    """

    request_id: str
    model: str
    messages: Sequence[dict[str, Any]] | None = None  # chat
    prompt: str | None = None  # legacy completions
    max_tokens: int | None = None  # None = up to the remaining context
    n: int = 1
    temperature: float | None = None  # None = the model's generation default
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None  # number of top logprobs wanted, None = no logprobs
    tools: Sequence[dict[str, Any]] | None = None  # OpenAI function tool objects
    tool_choice: str = "none"
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    stream: bool = True


def completion_budget(request: LLMRequest, prompt_tokens: int, context_length: int) -> int:
    """Tokens the completion may use; ContextLengthExceeded when prompt + max_tokens overflow."""
    where = "messages" if request.messages is not None else "prompt"
    wanted = request.max_tokens or 0
    if prompt_tokens >= context_length or prompt_tokens + wanted > context_length:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context_length} tokens. However, "
            f"you requested {prompt_tokens + wanted} tokens ({prompt_tokens} in the {where}, "
            f"{wanted} in the completion). Please reduce the length of the {where} or completion.",
            param=where,
        )
    return request.max_tokens or context_length - prompt_tokens


@dataclass(frozen=True, slots=True)
class LLMChunk:
    """A streamed piece of one choice; token counts are cumulative for the whole request.

    The first chunk of every stream is an *acceptance* chunk: index 0, no text, no finish
    reason, the prompt token count and zero completion tokens. It is yielded once the engine
    has validated and queued the request, so request errors (context length, invalid
    options) are raised before it and never after.
    """

    index: int
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class LLMEngine(Protocol):
    """A text generator that takes messages and streams chunks."""

    model_ids: Sequence[str]

    def info(self) -> ModelInfo:
        """The model this engine serves."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """Generate; closing or cancelling the iteration aborts the request in the engine."""
        ...

    def in_flight(self) -> int:
        """Requests submitted and neither finished nor aborted."""
        ...

    async def check(self) -> None:
        """Raise EngineUnavailable if the engine cannot serve."""
        ...

    async def aclose(self) -> None:
        """Release the engine."""
        ...


# -- Speech -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: 16 kHz mono float32 samples."""

    samples: npt.NDArray[np.float32]
    sample_rate: int = 16_000

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return float(len(self.samples)) / self.sample_rate


@dataclass(frozen=True, slots=True)
class STTOptions:
    """Decoding options of one transcription."""

    language: str | None = None  # None = detect
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    hotwords: tuple[str, ...] = ()
    temperature: float = 0.0
    word_timestamps: bool = True


@dataclass(frozen=True, slots=True)
class Word:
    """A recognised word with times in seconds; `interpolated` when the engine gave no usable timing."""

    text: str
    start: float
    end: float
    probability: float
    interpolated: bool = False


@dataclass(frozen=True, slots=True)
class Segment:
    """A decoded segment with times in seconds."""

    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    tokens: tuple[int, ...] = ()
    seek: int = 0
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class Transcript:
    """The engine's result for one audio."""

    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """All segment texts joined, trimmed."""
        return "".join(s.text for s in self.segments).strip()


@runtime_checkable
class STTEngine(Protocol):
    """Speech to text with word timings.

    `transcribe` reports progress (0..1, from segment end times) and hands each segment to
    `on_segment` as soon as it is decoded; both callbacks run on the event loop. Cancelling
    the call stops the work at the next segment boundary and frees the engine.
    """

    model_ids: Sequence[str]

    def info(self) -> ModelInfo:
        """The model this engine serves."""
        ...

    def languages(self) -> Mapping[str, str]:
        """Code -> lower-case English name of each language the model can transcribe (`fr` -> `french`)."""
        ...

    async def transcribe(
        self,
        audio: Audio,
        options: STTOptions,
        progress: Callable[[float], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        """Transcribe; progress is called with 0..1 as segments complete."""
        ...

    async def check(self) -> None:
        """Raise EngineUnavailable if the engine cannot serve."""
        ...

    async def aclose(self) -> None:
        """Release the engine."""
        ...


@dataclass(frozen=True, slots=True)
class DiarizeOptions:
    """Speaker-count hints."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    """One speaker's turn, times in seconds; `speaker` is the engine's own label."""

    speaker: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Diarized:
    """A diarizer's answer: turns sorted by start, and how sure it is of the speaker count (0..1;
    1.0 when the request fixed the count; None when the engine does not estimate it)."""

    turns: list[SpeakerTurn]
    count_confidence: float | None = None


@runtime_checkable
class Diarizer(Protocol):
    """Who spoke when."""

    model_ids: Sequence[str]

    def info(self) -> ModelInfo:
        """The pipeline this engine serves."""
        ...

    async def diarize(self, audio: Audio, options: DiarizeOptions) -> Diarized:
        """Speaker turns sorted by start (with the count's confidence where the engine has one)."""
        ...

    async def check(self) -> None:
        """Raise EngineUnavailable if the engine cannot serve."""
        ...

    async def aclose(self) -> None:
        """Release the engine."""
        ...


# -- the engines of one process ------------------------------------------------------------


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
