"""LLM chat and completions: requests to engine calls, admission control, aggregation and SSE."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from ulid import ULID

from lexia.engines.base import LLMChunk, LLMEngine, LLMRequest
from lexia.errors import EngineUnavailable, InternalError, LexiaError, ModelNotFound, Overloaded, ValidationFailed
from lexia.schemas.openai import ChatCompletionRequest, CompletionRequest
from lexia.services.llm.chat_input import (
    check_min_tokens,
    choices_n,
    include_usage,
    logit_bias,
    message_dict,
    response_format,
    stop_strings,
    tool_options,
)
from lexia.services.llm.chat_output import KEEPALIVE_FRAME, ChoiceState, Output, Shape
from lexia.services.llm.generation import END, KEEPALIVE, Finisher, Frames, Generation, Meter
from lexia.settings import LLMSettings

log = logging.getLogger("lexia.llm")

KEEPALIVE_SECONDS = 15.0
MAX_PROMPTS = 64
MAX_LOGGED_UNKNOWN = 1000


@dataclass(frozen=True, slots=True)
class Call:
    """A validated request: the engine requests and the shape of the answer."""

    shape: Shape
    requests: tuple[LLMRequest, ...]
    stream: bool
    request_id: str  # the HTTP request id, named in internal-error messages


class LLMService:
    """Serves /v1/chat/completions and /v1/completions on one LLM engine."""

    def __init__(
        self,
        engine: LLMEngine | None,
        settings: LLMSettings,
        *,
        on_queue_change: Callable[[int], None] | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.keepalive_seconds = keepalive_seconds
        self._on_queue_change = on_queue_change
        self._waiting = 0
        self._logged_unknown: set[str] = set()

    @property
    def waiting(self) -> int:
        """Admitted engine requests that have not produced their first token yet."""
        return self._waiting

    def _change_waiting(self, delta: int) -> None:
        self._waiting += delta
        if self._on_queue_change is not None:
            self._on_queue_change(self._waiting)

    def ensure_available(self) -> None:
        """Raise EngineUnavailable (503) when the LLM is disabled or not loaded."""
        self._engine()

    def _engine(self) -> LLMEngine:
        if self.engine is None:
            raise EngineUnavailable("The LLM engine is disabled or not loaded on this server")
        return self.engine

    def _log_unknown(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._logged_unknown and len(self._logged_unknown) < MAX_LOGGED_UNKNOWN:
                self._logged_unknown.add(name)
                log.info("ignoring unknown request field %r (logged once per field name)", name)

    def _model(self, engine: LLMEngine, name: str) -> str:
        info = engine.info()
        if name != info.id and name not in info.aliases:
            raise ModelNotFound(name)
        return info.id

    # -- validation ----------------------------------------------------------------------

    def chat_call(self, body: ChatCompletionRequest, unknown: Sequence[str], request_id: str) -> Call:
        """Validate a chat request and build its engine request."""
        engine = self._engine()
        self._log_unknown(unknown)
        n = choices_n(body.n, self.settings.max_n)
        stream = bool(body.stream)
        with_usage = include_usage(stream, body.stream_options)
        if body.top_logprobs is not None and not body.logprobs:
            raise ValidationFailed("top_logprobs requires logprobs to be true", param="top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        check_min_tokens(body.min_tokens, max_tokens, param)
        messages = [message_dict(i, m) for i, m in enumerate(body.messages)]
        tools, choice = tool_options(body.tools, body.tool_choice, parser=bool(self.settings.tool_parser))
        output_format = response_format(body.response_format)
        model = self._model(engine, body.model)
        call_id = f"chatcmpl-{ULID()}"
        request = LLMRequest(
            request_id=call_id,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            n=n,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            repetition_penalty=body.repetition_penalty,
            min_tokens=body.min_tokens,
            seed=body.seed,
            stop=stop_strings(body.stop),
            logit_bias=logit_bias(body.logit_bias),
            logprobs=(body.top_logprobs or 0) if body.logprobs else None,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            response_format=output_format,
            stream=stream,
        )
        shape = Shape("chat", call_id, model, int(time.time()), n, n, include_usage=with_usage)
        return Call(shape, (request,), stream, request_id)

    def completion_call(self, body: CompletionRequest, unknown: Sequence[str], request_id: str) -> Call:
        """Validate a legacy completions request and build one engine request per prompt."""
        engine = self._engine()
        self._log_unknown(unknown)
        if body.prompt is None:
            hint = "; chat messages go to /v1/chat/completions" if "messages" in unknown else ""
            raise ValidationFailed(f"prompt is required{hint}", param="prompt")
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise ValidationFailed(f"prompt must hold 1 to {MAX_PROMPTS} strings", param="prompt")
        n = choices_n(body.n, self.settings.max_n)
        stream = bool(body.stream)
        with_usage = include_usage(stream, body.stream_options)
        check_min_tokens(body.min_tokens, body.max_tokens, "max_tokens")
        stop = stop_strings(body.stop)
        bias = logit_bias(body.logit_bias)
        model = self._model(engine, body.model)
        call_id = f"cmpl-{ULID()}"
        requests = tuple(
            LLMRequest(
                request_id=call_id if len(prompts) == 1 else f"{call_id}-{i}",
                model=model,
                prompt=prompt,
                max_tokens=body.max_tokens,
                n=n,
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=body.top_k,
                min_p=body.min_p,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
                repetition_penalty=body.repetition_penalty,
                min_tokens=body.min_tokens,
                seed=body.seed,
                stop=stop,
                logit_bias=bias,
                logprobs=body.logprobs,
                stream=stream,
            )
            for i, prompt in enumerate(prompts)
        )
        echo = tuple(prompts) if body.echo else ()
        shape = Shape("text", call_id, model, int(time.time()), n * len(prompts), n, echo, with_usage)
        return Call(shape, requests, stream, request_id)

    # -- generation ----------------------------------------------------------------------

    async def open(self, call: Call, meter: Meter) -> Generation:
        """Admit the call and submit it; raises before any byte is sent (503, 400, …)."""
        engine = self._engine()
        wanted = len(call.requests)
        limit = self.settings.max_queued
        if limit > 0 and self._waiting + wanted > limit:
            raise Overloaded(f"The LLM is overloaded: {self._waiting} requests are waiting; retry shortly")
        self._change_waiting(wanted)
        generation = Generation(self._change_waiting)
        opened = 0
        try:
            for request in call.requests:
                stream = aiter(engine.stream(request))
                accepted: LLMChunk = await anext(stream)
                generation.attach(stream, accepted)
                opened += 1
            meter.progress(generation.prompt_tokens, 0)
        except BaseException:
            self._change_waiting(-(wanted - opened))
            with anyio.CancelScope(shield=True):
                await generation.aclose()
            raise
        # The prompt is charged now, concurrently: the first token need not wait for Redis.
        generation.background(meter.admitted(generation.prompt_tokens))
        generation.start(self.keepalive_seconds if call.stream else None)
        return generation

    async def complete(self, call: Call, generation: Generation, meter: Meter) -> dict[str, Any]:
        """Run the call to its end and return the completion object."""
        output = Output(call.shape)
        choices = [ChoiceState() for _ in range(call.shape.choices)]
        ended = 0
        try:
            while ended < generation.streams:
                for slot, item in await generation.next_items():
                    if item is END:
                        ended += 1
                    elif isinstance(item, LLMChunk):
                        choices[output.choice_index(slot, item)].add(item)
                    elif isinstance(item, BaseException):
                        raise self._failure(item, call)
            return output.completion(choices, generation.prompt_tokens, generation.completion_tokens)
        finally:
            await Finisher(generation, meter)()

    def events(self, call: Call, generation: Generation, meter: Meter) -> Frames:
        """SSE frames of the call; an engine failure becomes an error frame and [DONE]."""
        finisher = Finisher(generation, meter)
        return Frames(self._frames(call, generation, meter, finisher), finisher)

    async def _frames(
        self, call: Call, generation: Generation, meter: Meter, finisher: Finisher
    ) -> AsyncIterator[bytes]:
        output = Output(call.shape)
        ended = 0
        try:
            yield output.opening()
            while ended < generation.streams:
                frames: list[bytes] = []
                for slot, item in await generation.next_items():
                    if item is END:
                        ended += 1
                    elif item is KEEPALIVE:
                        frames.append(KEEPALIVE_FRAME)
                    elif isinstance(item, LLMChunk):
                        frames.append(output.frame(output.choice_index(slot, item), item))
                    elif isinstance(item, BaseException):
                        frames.append(output.error_frame(self._failure(item, call).body()))
                        yield b"".join(frames)
                        return
                meter.progress(generation.prompt_tokens, generation.completion_tokens)
                data = b"".join(frames)
                if data:
                    generation.mark_sent()
                    yield data
            yield output.closing(generation.prompt_tokens, generation.completion_tokens)
        finally:
            await finisher()

    @staticmethod
    def _failure(exc: BaseException, call: Call) -> LexiaError:
        if isinstance(exc, LexiaError):
            log.warning("LLM request %s failed: %s", call.shape.id, exc.message)
            return exc
        log.error("LLM request %s failed", call.shape.id, exc_info=exc)
        return InternalError(f"The model failed while generating (request id {call.request_id})")


