"""Tool calls and structured output over /v1/chat/completions, through the OpenAI SDK."""

from __future__ import annotations

import json

import pytest

from tests.conftest import bearer
from tests.llm_support import MODEL, LLMAppFactory, llm_apps, sdk
from tests.test_auth import assert_error

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PARSER = {"LEXIA_LLM_TOOL_PARSER": "hermes"}

llm_app = pytest.fixture(llm_apps)


async def test_tool_calls_non_streamed(llm_app: LLMAppFactory) -> None:
    api = await llm_app(**PARSER)
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "get_weather for Paris and get_time"}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "lexia", "days": 1}  # type: ignore[union-attr]
    assert json.loads(calls[1].function.arguments) == {}  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


async def test_tool_call_deltas_streamed_and_reassembled_by_the_sdk(llm_app: LLMAppFactory) -> None:
    api = await llm_app(**PARSER)
    _, secret = await api.make_key("llm")
    async with sdk(api, secret).chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "get_weather and get_time please"}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
    ) as stream:
        fragments = 0
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments += 1
        final = await stream.get_final_completion()
    assert fragments >= 4  # arguments arrive in several pieces
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "lexia", "days": 1}),
        ("get_time", {}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


async def test_first_tool_delta_has_id_and_name_then_arguments_only(llm_app: LLMAppFactory) -> None:
    api = await llm_app(**PARSER)
    _, secret = await api.make_key("llm")
    stream = await sdk(api, secret).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "get_weather"}],
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    deltas = [d for c in [c async for c in stream] for ch in c.choices for d in (ch.delta.tool_calls or [])]
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather"
    assert rest and all(d.id is None and d.function is not None and d.function.name is None for d in rest)


async def test_forced_function_and_required_work_without_a_parser(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    forced = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "anything"}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in forced.choices[0].message.tool_calls or []] == ["get_time"]  # type: ignore[union-attr]
    required = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "anything"}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice="required",
    )
    assert [c.function.name for c in required.choices[0].message.tool_calls or []] == ["get_weather"]  # type: ignore[union-attr]
    none = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "get_weather"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
    )
    assert none.choices[0].message.content == "get_weather" and none.choices[0].message.tool_calls is None


async def test_tool_results_in_history_are_accepted(llm_app: LLMAppFactory) -> None:
    api = await llm_app(**PARSER)
    _, secret = await api.make_key("llm")
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    completion = await sdk(api, secret).chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert completion.choices[0].message.content == "thanks"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [WEATHER]}, "tool_choice"),  # default auto without a parser
        ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
        ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools.1.function.name"),
    ],
)
async def test_bad_tool_options_are_422(llm_app: LLMAppFactory, body: dict[str, object], param: str) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **body}
    response = await api.client.post("/v1/chat/completions", json=payload, headers=bearer(secret))
    assert_error(response, 422, "validation_error", param)


async def test_json_schema_response_format(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["title", "score", "tags"],
        "additionalProperties": False,
    }
    completion = await sdk(api, secret).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "summarise"}],
        response_format={"type": "json_schema", "json_schema": {"name": "summary", "schema": schema, "strict": True}},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"title": "lexia", "score": 1, "tags": ["lexia"]}


async def test_json_object_response_format_streamed(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    stream = await sdk(api, secret).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "dis  bonjour"}],
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join([ch.delta.content or "" async for c in stream for ch in c.choices])
    assert json.loads(text) == {"echo": "dis  bonjour"}
