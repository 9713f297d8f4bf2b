"""FakeLLM: a deterministic LLM engine for development, tests and benchmarks.

Text. The completion echoes the last user message (or the prompt) word by word: each word is
one token and every word after the first keeps one leading space. Prompt tokens = the
whitespace-separated words of every message's content plus 3 per message (the prompt's words
for completions). `max_tokens` cuts with finish_reason "length" (absent: the remaining
context); a stop string cuts the text before it with "stop". Each of the `n` choices carries
the same output. Sampling options (temperature, seed, penalties, logit_bias, …) are accepted
and have no effect. A prompt of `context_length` tokens or more, or one whose `max_tokens`
does not fit beside it, raises ContextLengthExceeded before anything is yielded.

JSON mode. With response_format json_object the output is `{"echo": "<last user message>"}`;
with json_schema it is `example_value(schema)`. JSON text is `json.dumps` output split
losslessly into tokens of "optional whitespace + a run of non-space characters".

Tools. With tool_choice "auto", every tool whose name appears as a word in the last user
message is called, in order of first mention (only the first with parallel_tool_calls false);
no mention gives plain text. "required" is "auto" falling back to the first tool; a forced
function is called alone. A call's arguments are `example_value(parameters)` as JSON; a call
streams as one delta with id and name (1 token) and then its argument tokens (1 token each);
finish_reason is "tool_calls".

Logprobs (when asked): every content token has logprob -0.25; its top list is the token itself
followed by " lexia", " fake", … at -2.0, -2.5, … (as many as asked).

Options: `token_delay` seconds before each generated token; `max_running` requests generate at
once (the others wait after acceptance, as behind a full batch); `fail_after` generated tokens
after which a request raises InternalError (mid-stream failure injection). `aborted` lists the
ids of requests whose stream was closed or cancelled before it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from lexia.engines.base import LLMChunk, LLMRequest, ModelInfo, TokenLogprob, ToolCallDelta, completion_budget
from lexia.errors import InternalError

MESSAGE_OVERHEAD_TOKENS = 3
TOKEN_LOGPROB = -0.25
ALTERNATIVES = (" lexia", " fake", " word", " speech", " test", " audio", " sample", " voice")
MAX_SCHEMA_DEPTH = 16
_JSON_TOKEN = re.compile(r"\s*\S+")


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


def json_tokens(text: str) -> list[str]:
    """Split JSON text losslessly into "whitespace + non-space run" tokens."""
    return _JSON_TOKEN.findall(text)


def example_value(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A deterministic instance of a JSON schema (first enum/const/branch, minimal sizes)."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return example_value(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return example_value(branches[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: example_value(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        if schema.get("maxItems") == 0:
            count = 0
        return [example_value(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _example_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _example_string(schema)


def _example_number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    if isinstance(schema.get("minimum"), int | float):
        value = max(value, schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        value = max(value, math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        value = min(value, schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        value = min(value, math.ceil(schema["exclusiveMaximum"]) - 1)
    return math.ceil(value) if integer else value


def _example_string(schema: dict[str, Any]) -> str:
    formats = {
        "date-time": "2026-01-01T00:00:00Z",
        "date": "2026-01-01",
        "time": "00:00:00",
        "email": "lexia@example.com",
        "uri": "https://example.com",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    text = formats.get(str(schema.get("format")), "lexia")
    minimum = int(schema.get("minLength", 0))
    if len(text) < minimum:
        text = (text * (minimum // len(text) + 1))[:minimum]
    if isinstance(schema.get("maxLength"), int):
        text = text[: schema["maxLength"]]
    return text


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every choice of a request outputs: text tokens or tool calls (name, arguments)."""

    tokens: tuple[str, ...] = ()
    calls: tuple[tuple[str, str], ...] = ()


class FakeLLM:
    """Deterministic LLM: echo, JSON mode, tool calls, logprobs; optional pacing and failures."""

    def __init__(
        self,
        model_id: str = "lexia-fake-llm",
        *,
        aliases: Sequence[str] = (),
        context_length: int = 4096,
        token_delay: float = 0.0,
        max_running: int = 0,
        fail_after: int | None = None,
    ) -> None:
        self.model_ids: Sequence[str] = (model_id, *aliases)
        self._info = ModelInfo(
            id=model_id,
            kind="llm",
            created=int(time.time()),
            aliases=tuple(aliases),
            context_length=context_length,
        )
        self.context_length = context_length
        self.token_delay = token_delay
        self.fail_after = fail_after
        self._slots = asyncio.Semaphore(max_running) if max_running > 0 else None
        self._running: set[str] = set()
        self.aborted: list[str] = []

    def info(self) -> ModelInfo:
        """The fake model."""
        return self._info

    def in_flight(self) -> int:
        """Requests accepted and not yet finished, failed or aborted."""
        return len(self._running)

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

    def _limit(self, request: LLMRequest, prompt_tokens: int) -> int:
        return completion_budget(request, prompt_tokens, self.context_length)

    def _plan(self, request: LLMRequest) -> _Plan:
        source = self._source(request)
        calls = self._tool_calls(request, source)
        if calls:
            return _Plan(calls=calls)
        response_format = request.response_format or {}
        if response_format.get("type") == "json_object":
            return _Plan(tokens=tuple(json_tokens(json.dumps({"echo": source}, ensure_ascii=False))))
        if response_format.get("type") == "json_schema":
            value = example_value(response_format.get("schema") or {})
            return _Plan(tokens=tuple(json_tokens(json.dumps(value, ensure_ascii=False))))
        return _Plan(tokens=tuple(fake_tokens(source)))

    @staticmethod
    def _tool_calls(request: LLMRequest, source: str) -> tuple[tuple[str, str], ...]:
        tools = {
            str(t["function"]["name"]): t["function"].get("parameters")
            for t in request.tools or ()
            if isinstance(t.get("function"), dict) and "name" in t["function"]
        }
        if not tools or request.tool_choice == "none":
            return ()
        if request.tool_choice in tools:
            names = [request.tool_choice]
        else:
            words = re.findall(r"[A-Za-z0-9_-]+", source)
            names = list(dict.fromkeys(w for w in words if w in tools))
            if not names and request.tool_choice == "required":
                names = [next(iter(tools))]
            if not request.parallel_tool_calls:
                names = names[:1]
        return tuple(
            (name, json.dumps(example_value(tools[name]) if tools[name] else {}, ensure_ascii=False))
            for name in names
        )

    @staticmethod
    def _logprob(token: str, top: int) -> TokenLogprob:
        alternatives = [(token, TOKEN_LOGPROB)]
        alternatives += [(alt, -2.0 - 0.5 * i) for i, alt in enumerate(ALTERNATIVES)]
        return TokenLogprob(token, TOKEN_LOGPROB, list(token.encode()), tuple(alternatives[:top]))

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """Acceptance chunk, then one chunk per token per choice and a finish chunk per choice."""
        prompt_tokens = self.count_prompt(request)
        limit = self._limit(request, prompt_tokens)
        plan = self._plan(request)
        self._running.add(request.request_id)
        try:
            yield LLMChunk(0, prompt_tokens=prompt_tokens)
            async with self._slots or contextlib.nullcontext():
                produced = [0]
                for index in range(request.n):
                    choice = (
                        self._tools(request, plan, index, limit)
                        if plan.calls
                        else self._text(request, plan, index, limit)
                    )
                    async for piece in choice:
                        if piece.finish_reason is None:
                            await self._pace(produced)
                        yield LLMChunk(
                            index,
                            piece.text,
                            piece.tool_calls,
                            piece.logprobs,
                            piece.finish_reason,
                            prompt_tokens,
                            produced[0],
                        )
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted.append(request.request_id)
            raise
        finally:
            self._running.discard(request.request_id)

    async def _pace(self, produced: list[int]) -> None:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.fail_after is not None and produced[0] >= self.fail_after:
            raise InternalError(f"FakeLLM: injected failure after {self.fail_after} tokens")
        produced[0] += 1

    async def _text(
        self, request: LLMRequest, plan: _Plan, index: int, limit: int
    ) -> AsyncIterator[LLMChunk]:
        """Content pieces (finish_reason None) and then the finish piece of one choice."""
        text, finish = "", "stop"
        top = request.logprobs
        for i, token in enumerate(plan.tokens):
            if i >= limit:
                finish = "length"
                break
            candidate = text + token
            cut = min((candidate.find(s) for s in request.stop if s in candidate), default=-1)
            if cut >= 0:
                if cut > len(text):
                    piece = candidate[len(text):cut]
                    yield LLMChunk(index, piece, logprobs=self._logs(piece, top))
                break
            text = candidate
            yield LLMChunk(index, token, logprobs=self._logs(token, top))
        yield LLMChunk(index, finish_reason=finish)

    def _logs(self, token: str, top: int | None) -> tuple[TokenLogprob, ...]:
        return () if top is None else (self._logprob(token, top),)

    async def _tools(
        self, request: LLMRequest, plan: _Plan, index: int, limit: int
    ) -> AsyncIterator[LLMChunk]:
        """Tool-call deltas of one choice, then its finish piece."""
        used, finish = 0, "tool_calls"
        for k, (name, arguments) in enumerate(plan.calls):
            for i, fragment in enumerate(["", *json_tokens(arguments)]):
                if used >= limit:
                    finish = "length"
                    break
                used += 1
                delta = (
                    ToolCallDelta(k, id=f"call_{request.request_id[-16:]}_{index}_{k}", name=name)
                    if i == 0
                    else ToolCallDelta(k, arguments=fragment)
                )
                yield LLMChunk(index, tool_calls=(delta,))
            if finish == "length":
                break
        yield LLMChunk(index, finish_reason=finish)

    async def check(self) -> None:
        """Always healthy."""

    async def aclose(self) -> None:
        """Nothing to release."""
