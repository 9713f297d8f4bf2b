"""POST /v1/chat/completions and /v1/completions: scope llm, tokens metered and rate-limited."""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, Request, Response, post

from lexia.api.deps import caller, caller_limits, decode_json, note_usage, services
from lexia.api.errors import msgspec_message, msgspec_param
from lexia.api.observe import record_request
from lexia.api.requestid import request_id
from lexia.api.security import route_opt
from lexia.api.sse import EventStream
from lexia.errors import ValidationFailed
from lexia.schemas.openai import ChatCompletionRequest, CompletionRequest
from lexia.services.chat import Call, LLMService

Req = Request[Any, Any, Any]
T = TypeVar("T")
LLM_STATE = "lexia.llm"


def llm_service(app: Litestar) -> LLMService:
    """The LLM service of the app's running lifespan (made on first use)."""
    svc = app.state.services
    cached = app.state.get(LLM_STATE)
    if cached is None or cached[0] is not svc:
        service = LLMService(svc.engines.llm, svc.settings.engines.llm, on_queue_change=svc.metrics.llm_queue.set)
        cached = (svc, service)
        app.state[LLM_STATE] = cached
    return cached[1]


class HttpMeter:
    """Token counts of one request → its usage event, the key's token allowance, the metrics."""

    def __init__(self, request: Req, model: str) -> None:
        self._request = request
        self._svc = services(request)
        self._key_id = caller(request).id
        self._limit = caller_limits(request)["tokens_per_minute"]
        self._model = model

    def progress(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Keep the usage event current, so an aborted stream is metered too."""
        note_usage(self._request, kind="llm", input_tokens=prompt_tokens, output_tokens=completion_tokens)

    async def admitted(self, prompt_tokens: int) -> None:
        """Charge the prompt at admission."""
        self._svc.metrics.llm_tokens.labels(self._model, "input").inc(prompt_tokens)
        await self._svc.limiter.debit(self._key_id, "tokens", prompt_tokens, self._limit)

    async def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Charge the output when the request ends."""
        self._svc.metrics.llm_tokens.labels(self._model, "output").inc(completion_tokens)
        await self._svc.limiter.debit(self._key_id, "tokens", completion_tokens, self._limit)


def _convert(raw: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        raise ValidationFailed(msgspec_message(text), param=msgspec_param(text)) from None


async def _answer(request: Req, llm: LLMService, call: Call) -> Response[Any]:
    meter = HttpMeter(request, call.shape.model)
    generation = await llm.open(call, meter)
    if not call.stream:
        return Response(await llm.complete(call, generation, meter))
    # A client that disconnects never gets the final body message: record the request here.
    return EventStream(llm.events(call, generation, meter), on_close=partial(record_request, request.scope, 200))


@post("/v1/chat/completions", opt=route_opt("llm", "tokens"), status_code=200)
async def chat_completions(request: Req) -> Response[Any]:
    """OpenAI Chat Completions, streamed (SSE) or not."""
    llm = llm_service(request.app)
    llm.ensure_available()
    raw = await decode_json(request, dict[str, Any])
    call = llm.chat_call(_convert(raw, ChatCompletionRequest), raw, request_id(request.scope))
    return await _answer(request, llm, call)


@post("/v1/completions", opt=route_opt("llm", "tokens"), status_code=200)
async def completions(request: Req) -> Response[Any]:
    """OpenAI legacy text completions, streamed (SSE) or not."""
    llm = llm_service(request.app)
    llm.ensure_available()
    raw = await decode_json(request, dict[str, Any])
    call = llm.completion_call(_convert(raw, CompletionRequest), raw, request_id(request.scope))
    return await _answer(request, llm, call)
