"""The LLMEngine contract: checks every engine passes (FakeLLM always, VLLMEngine on CPU too).

Each check takes an engine and asserts structure only (counts, order, finish reasons), so it
holds for a random-weight model as well as for the deterministic fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from itertools import count

import pytest

from lexia.engines.base import LLMChunk, LLMEngine, LLMRequest
from lexia.errors import ContextLengthExceeded

_ids = count()
LONG_MESSAGE = " ".join(["the"] * 120)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"utc": {"type": "boolean"}},
            "required": ["utc"],
            "additionalProperties": False,
        },
    },
}
OK_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def chat(**kw: object) -> LLMRequest:
    """A chat request with a long user message (enough words for the fake to fill max_tokens)."""
    messages = kw.pop("messages", [{"role": "user", "content": LONG_MESSAGE}])
    return LLMRequest(request_id=f"contract-{next(_ids)}", model="m", messages=messages, **kw)  # type: ignore[arg-type]


async def collect(engine: LLMEngine, request: LLMRequest) -> list[LLMChunk]:
    """Every chunk of a request."""
    return [chunk async for chunk in engine.stream(request)]


def finishes(chunks: list[LLMChunk]) -> dict[int, str]:
    """finish_reason per choice (asserting one finish per choice)."""
    out: dict[int, str] = {}
    for chunk in chunks:
        if chunk.finish_reason is not None:
            assert chunk.index not in out, "a choice finished twice"
            out[chunk.index] = chunk.finish_reason
    return out


async def acceptance_chunk_comes_first(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=4, min_tokens=4))
    first = chunks[0]
    assert (first.index, first.text, first.tool_calls, first.finish_reason) == (0, "", (), None)
    assert first.prompt_tokens > 0 and first.completion_tokens == 0
    assert all(c.prompt_tokens == first.prompt_tokens for c in chunks)


async def max_tokens_ends_with_length_and_exact_counts(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=6, min_tokens=6))
    assert finishes(chunks) == {0: "length"}
    assert chunks[-1].finish_reason == "length"
    counts = [c.completion_tokens for c in chunks]
    assert counts == sorted(counts), "cumulative counts never decrease"
    assert counts[-1] == 6


async def n_choices_each_finish_once(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=5, min_tokens=5, n=2))
    assert finishes(chunks) == {0: "length", 1: "length"}
    assert chunks[-1].completion_tokens == 10
    assert {c.index for c in chunks} == {0, 1}


async def aggregate_mode_has_the_same_meaning(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=5, min_tokens=5, n=2, stream=False))
    assert finishes(chunks) == {0: "length", 1: "length"}
    assert chunks[-1].completion_tokens == 10


async def completion_prompt_is_served(engine: LLMEngine) -> None:
    request = LLMRequest(request_id=f"contract-{next(_ids)}", model="m", prompt=LONG_MESSAGE, max_tokens=3, min_tokens=3)
    chunks = await collect(engine, request)
    assert chunks[0].prompt_tokens > 0
    assert finishes(chunks) == {0: "length"}
    assert chunks[-1].completion_tokens == 3


async def context_overflow_raises_before_any_chunk(engine: LLMEngine) -> None:
    too_long = chat(messages=[{"role": "user", "content": " ".join(["hello"] * 6000)}])
    stream = engine.stream(too_long)
    with pytest.raises(ContextLengthExceeded) as caught:
        await anext(aiter(stream))
    assert caught.value.param == "messages"
    context = engine.info().context_length
    assert context is not None
    with pytest.raises(ContextLengthExceeded):
        await anext(aiter(engine.stream(chat(messages=[{"role": "user", "content": "hi"}], max_tokens=context))))


async def closing_a_stream_aborts_the_request(engine: LLMEngine) -> None:
    stream = aiter(engine.stream(chat(max_tokens=300, min_tokens=300)))
    for _ in range(3):
        await anext(stream)
    assert engine.in_flight() >= 1
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(50):
        if engine.in_flight() == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.in_flight() == 0


async def stop_strings_never_appear_in_the_text(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=20, stop=("a", "e")))
    text = "".join(c.text for c in chunks)
    assert "a" not in text and "e" not in text
    assert set(finishes(chunks).values()) <= {"stop", "length"}


async def logprobs_cover_every_token(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=5, min_tokens=5, logprobs=2))
    entries = [e for c in chunks for e in c.logprobs]
    assert len(entries) == 5
    for entry in entries:
        assert entry.logprob <= 0
        assert 1 <= len(entry.top) <= 2
        assert all(lp <= 0 for _, lp in entry.top)


async def json_schema_output_is_json(engine: LLMEngine) -> None:
    request = chat(max_tokens=120, response_format={"type": "json_schema", "name": "ok", "schema": OK_SCHEMA})
    chunks = await collect(engine, request)
    text = "".join(c.text for c in chunks)
    reason = finishes(chunks)[0]
    assert text.lstrip().startswith("{")
    if reason == "stop":
        value = json.loads(text)
        assert set(value) == {"ok"} and isinstance(value["ok"], bool)


async def forced_function_streams_one_call(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=120, tools=[WEATHER, CLOCK], tool_choice="get_weather"))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas and deltas[0].id and deltas[0].name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert all(d.id is None and d.name is None for d in deltas[1:])
    reason = finishes(chunks)[0]
    assert reason in {"tool_calls", "length"}
    if reason == "tool_calls":
        assert json.loads("".join(d.arguments for d in deltas))["city"] in {"Paris", "Rome"}


async def required_tool_choice_calls_known_tools(engine: LLMEngine) -> None:
    chunks = await collect(engine, chat(max_tokens=160, tools=[WEATHER, CLOCK], tool_choice="required"))
    calls: dict[int, dict[str, str]] = {}
    for delta in (d for c in chunks for d in c.tool_calls):
        call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
        if delta.name is not None:
            assert delta.id, "the first delta of a call carries its id"
            call["name"] = delta.name
        call["arguments"] += delta.arguments
    reason = finishes(chunks)[0]
    assert reason in {"tool_calls", "length"}
    if reason == "tool_calls":
        assert calls and all(c["name"] in {"get_weather", "get_time"} for c in calls.values())
        assert all(isinstance(json.loads(c["arguments"]), dict) for c in calls.values())


CONTRACT: list[Callable[[LLMEngine], Awaitable[None]]] = [
    acceptance_chunk_comes_first,
    max_tokens_ends_with_length_and_exact_counts,
    n_choices_each_finish_once,
    aggregate_mode_has_the_same_meaning,
    completion_prompt_is_served,
    context_overflow_raises_before_any_chunk,
    closing_a_stream_aborts_the_request,
    stop_strings_never_appear_in_the_text,
    logprobs_cover_every_token,
    json_schema_output_is_json,
    forced_function_streams_one_call,
    required_tool_choice_calls_known_tools,
]
