"""POST /v1/chat/completions and /v1/completions (API.md §3.2, §3.3): scope llm, tokens metered.

The service writes the completion objects and SSE frames itself (the LLM hot path, measured by
`make bench-llm`); the routes document them as ChatCompletion and TextCompletion.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec

from lexia.api.deps import caller, caller_limits, current_services, note_usage
from lexia.api.errors import documented
from lexia.api.observe import record_request
from lexia.api.requestid import request_id
from lexia.api.security import secured
from lexia.api.sse import EventStream
from lexia.schemas.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    TextCompletion,
    unknown_fields,
)
from lexia.services.llm.chat import Call, LLMService

Req = Request[Any, Any, Any]
LLM_ERRORS = documented(400, 404, 413, 415, 422)
CHAT_OK = ResponseSpec(ChatCompletion, generate_examples=False, description="A chat.completion, or SSE chunks")
TEXT_OK = ResponseSpec(TextCompletion, generate_examples=False, description="A text_completion, or SSE chunks")


class HttpMeter:
    """Token counts of one request → its usage event, the key's token allowance, the metrics."""

    def __init__(self, request: Req, model: str) -> None:
        self._request = request
        self._svc = current_services()
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


async def answer(request: Req, llm: LLMService, call: Call) -> Response[Any]:
    """The completion object, or the SSE stream of chunks when the call streams (503 without an LLM)."""
    meter = HttpMeter(request, call.shape.model)
    generation = await llm.open(call, meter)
    if not call.stream:
        return Response(await llm.complete(call, generation, meter))
    # A client that disconnects never gets the final body message: record the request here.
    return EventStream(llm.events(call, generation, meter), on_close=partial(record_request, request.scope, 200))


class ChatController(Controller):
    """/v1/chat."""

    path = "/v1/chat"
    opt = secured("llm", "tokens")

    @post("/completions", status_code=200, responses={200: CHAT_OK, **LLM_ERRORS})
    async def chat_completions(self, request: Req, data: ChatCompletionRequest, llm: LLMService) -> Response[Any]:
        """OpenAI Chat Completions, streamed (SSE) or not."""
        llm.ensure_available()
        unknown = unknown_fields(await request.body(), ChatCompletionRequest)
        return await answer(request, llm, llm.chat_call(data, unknown, request_id(request.scope)))


class CompletionsController(Controller):
    """/v1/completions."""

    path = "/v1/completions"
    opt = secured("llm", "tokens")

    @post("/", status_code=200, responses={200: TEXT_OK, **LLM_ERRORS})
    async def completions(self, request: Req, data: CompletionRequest, llm: LLMService) -> Response[Any]:
        """OpenAI legacy text completions, streamed (SSE) or not."""
        llm.ensure_available()
        unknown = unknown_fields(await request.body(), CompletionRequest)
        return await answer(request, llm, llm.completion_call(data, unknown, request_id(request.scope)))
