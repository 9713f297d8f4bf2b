"""The LLM engine contract on FakeLLM, plus the fake's own documented semantics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from lexia.engines.base import LLMEngine, LLMRequest
from lexia.engines.fake_llm import FakeLLM, example_value, fake_tokens, json_tokens
from lexia.errors import InternalError
from tests.engine_contract_llm import CLOCK, CONTRACT, WEATHER, chat, collect


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
async def test_fake_llm_meets_the_engine_contract(check: Callable[[LLMEngine], Awaitable[None]]) -> None:
    engine = FakeLLM("fake")
    assert isinstance(engine, LLMEngine)
    await check(engine)


async def test_fake_echo_keeps_leading_spaces_and_counts_words() -> None:
    chunks = await collect(FakeLLM(), chat(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Bonjour  tout\tle monde"}]))
    assert [c.text for c in chunks[1:-1]] == ["Bonjour", " tout", " le", " monde"]
    assert chunks[0].prompt_tokens == (2 + 3) + (4 + 3)
    assert chunks[-1].completion_tokens == 4 and chunks[-1].finish_reason == "stop"


async def test_fake_auto_calls_mentioned_tools_in_order() -> None:
    request = chat(messages=[{"role": "user", "content": "get_time then get_weather please"}], tools=[WEATHER, CLOCK], tool_choice="auto")
    chunks = await collect(FakeLLM(), request)
    heads = [d for c in chunks for d in c.tool_calls if d.name]
    assert [(d.index, d.name) for d in heads] == [(0, "get_time"), (1, "get_weather")]
    arguments = {i: "".join(d.arguments for c in chunks for d in c.tool_calls if d.index == i) for i in (0, 1)}
    assert json.loads(arguments[0]) == {"utc": True} and json.loads(arguments[1]) == {"city": "Paris"}
    assert chunks[-1].finish_reason == "tool_calls"


async def test_fake_auto_without_mention_answers_text_and_parallel_off_keeps_one_call() -> None:
    plain = await collect(FakeLLM(), chat(messages=[{"role": "user", "content": "hello there"}], tools=[WEATHER], tool_choice="auto"))
    assert "".join(c.text for c in plain) == "hello there" and plain[-1].finish_reason == "stop"
    one = await collect(
        FakeLLM(),
        chat(messages=[{"role": "user", "content": "get_time get_weather"}], tools=[WEATHER, CLOCK], tool_choice="auto", parallel_tool_calls=False),
    )
    assert [d.name for c in one for d in c.tool_calls if d.name] == ["get_time"]


async def test_fake_json_object_wraps_the_message() -> None:
    chunks = await collect(FakeLLM(), chat(messages=[{"role": "user", "content": "a  b"}], response_format={"type": "json_object"}))
    assert json.loads("".join(c.text for c in chunks)) == {"echo": "a  b"}


def test_example_value_follows_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 8},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "when": {"type": ["null", "string"], "format": "date"},
            "ratio": {"type": "number", "exclusiveMaximum": 1},
        },
        "$defs": {"tag": {"const": "x"}},
    }
    assert example_value(schema) == {
        "name": "lexialex", "age": 18, "tags": ["x", "x"], "kind": "a", "when": "2026-01-01", "ratio": 0,
    }


def test_token_splitters_are_lossless_where_documented() -> None:
    text = json.dumps({"a": "x  y", "b": [1, 2]})
    assert "".join(json_tokens(text)) == text
    assert fake_tokens("a  b\nc") == ["a", " b", " c"]


async def test_fake_fail_after_raises_mid_stream() -> None:
    engine = FakeLLM(fail_after=2)
    seen = []
    with pytest.raises(InternalError):
        async for chunk in engine.stream(chat()):
            seen.append(chunk)
    assert seen[-1].completion_tokens == 2 and engine.in_flight() == 0


async def test_fake_max_running_queues_after_acceptance() -> None:
    engine = FakeLLM(max_running=1, token_delay=0.01)
    first = aiter(engine.stream(chat(max_tokens=50)))
    second = aiter(engine.stream(chat(max_tokens=50)))
    await anext(first)
    await anext(first)  # holds the only slot
    await anext(second)  # accepted
    pending = asyncio.ensure_future(anext(second))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await first.aclose()  # type: ignore[attr-defined]
    chunk = await asyncio.wait_for(pending, 1)
    assert chunk.completion_tokens == 1
    await second.aclose()  # type: ignore[attr-defined]
    assert engine.in_flight() == 0 and len(engine.aborted) == 2


async def test_fake_counts_when_requests_carry_tool_history() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    chunks = await collect(FakeLLM(), LLMRequest("r", "m", messages=messages))
    assert chunks[0].prompt_tokens == (3 + 3) + (0 + 3) + (1 + 3)
    assert "".join(c.text for c in chunks) == "weather in Paris"
