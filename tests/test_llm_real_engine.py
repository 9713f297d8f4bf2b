"""The real VLLMEngine on CPU with a tiny random Llama: engine contract and the HTTP API on top.

Run in the engines environment: `.venv-engines/bin/python -m pytest -m real_engines tests/test_llm_real_engine.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lexia.engines.base import LLMEngine, LLMRequest
from lexia.engines.vllm import VLLMEngine, load
from lexia.settings import LLMSettings
from tests.conftest import bearer
from tests.engine_contract_llm import CONTRACT, WEATHER, collect
from tests.llm_support import LLMAppFactory, asgi_post, llm_apps, parse_sse, sdk
from tests.test_auth import assert_error
from tests.tiny_llama import build_tiny_llama

pytestmark = pytest.mark.real_engines
SERVED = "tiny-llama"
llm_app = pytest.fixture(llm_apps)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama built locally once per session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
async def vllm_engine(tiny_llama: Path) -> AsyncIterator[VLLMEngine]:
    """One vLLM engine (CPU, float32, eager) for the whole session; its core is a spawned process."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    settings = LLMSettings(
        model=str(tiny_llama),
        served_name=SERVED,
        aliases=("tiny",),
        max_model_len=512,
        dtype="float32",
        enforce_eager=True,
        max_num_seqs=4,
        tool_parser="hermes",
    )
    engine = await load(settings)
    yield engine
    await engine.aclose()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
async def test_vllm_engine_meets_the_engine_contract(
    vllm_engine: VLLMEngine, check: Callable[[LLMEngine], Awaitable[None]]
) -> None:
    await check(vllm_engine)
    assert vllm_engine.in_flight() == 0


async def test_vllm_engine_serves_its_model_info_and_health(vllm_engine: VLLMEngine) -> None:
    info = vllm_engine.info()
    assert (info.id, info.kind, info.aliases, info.context_length) == (SERVED, "llm", ("tiny",), 512)
    await vllm_engine.check()


async def test_hermes_parser_turns_tagged_text_into_call_deltas(vllm_engine: VLLMEngine) -> None:
    from vllm.outputs import CompletionOutput

    request = LLMRequest("parser", SERVED, messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice="auto")
    decoder = vllm_engine.decoder(request)
    pieces = ["Sure. ", "<tool_call>", '{"name": "get_weather", ', '"arguments": {"city": ', '"Paris"}}', "</tool_call>"]
    chunks = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        output = CompletionOutput(0, piece, [i], None, None, finish_reason="stop" if last else None)
        chunks += decoder.feed(output)
    text = "".join(c.text for c in chunks)
    deltas = [d for c in chunks for d in c.tool_calls]
    assert text.startswith("Sure.")
    assert deltas[0].name == "get_weather" and deltas[0].id
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].finish_reason == "tool_calls"


async def test_streamed_chat_through_the_http_api(llm_app: LLMAppFactory, vllm_engine: VLLMEngine) -> None:
    api = await llm_app(vllm_engine)
    _, secret = await api.make_key("llm,usage")
    stream = await sdk(api, secret).chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=8,
        n=2,
        extra_body={"min_tokens": 8},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.model for c in chunks} == {SERVED}
    assert [ch.index for c in chunks[:2] for ch in c.choices] == [0, 1]
    assert all(ch.delta.role == "assistant" for c in chunks[:2] for ch in c.choices)
    finishes = {ch.index: ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason}
    assert finishes == {0: "length", 1: "length"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 16
    await api.services.usage.flush()
    rows = (await api.client.get("/v1/usage", headers=bearer(secret))).json()["data"]
    assert rows[0]["output_tokens"] == 16 and rows[0]["input_tokens"] == usage.prompt_tokens


async def test_non_streamed_tools_and_json_through_the_http_api(llm_app: LLMAppFactory, vllm_engine: VLLMEngine) -> None:
    api = await llm_app(vllm_engine, LEXIA_LLM_TOOL_PARSER="hermes")
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    forced = await client.chat.completions.create(
        model=SERVED,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
    )
    choice = forced.choices[0]
    assert choice.finish_reason in {"tool_calls", "length"}
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    auto = await client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], max_tokens=6  # type: ignore[list-item]
    )
    assert auto.choices[0].finish_reason in {"stop", "length", "tool_calls"}
    assert auto.usage is not None and auto.usage.completion_tokens <= 6


async def test_disconnect_aborts_the_vllm_request(llm_app: LLMAppFactory, vllm_engine: VLLMEngine) -> None:
    api = await llm_app(vllm_engine)
    _, secret = await api.make_key("llm,usage")
    body = {"model": SERVED, "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": 400, "min_tokens": 400}
    exchange = await asgi_post(
        api.app, "/v1/chat/completions", body, bearer(secret), disconnect_when=lambda seen: seen.count(b"data: ") >= 4
    )
    assert exchange.status == 200 and b"[DONE]" not in exchange.body
    assert parse_sse(exchange.body.decode()).chunks
    assert vllm_engine.in_flight() == 0
    await api.services.usage.flush()
    rows = (await api.client.get("/v1/usage", headers=bearer(secret))).json()["data"]
    assert 1 <= rows[0]["output_tokens"] < 400


async def test_context_overflow_is_400_before_streaming(llm_app: LLMAppFactory, vllm_engine: VLLMEngine) -> None:
    api = await llm_app(vllm_engine)
    _, secret = await api.make_key("llm")
    body = {"model": SERVED, "messages": [{"role": "user", "content": "hello " * 800}], "stream": True}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert_error(response, 400, "context_length_exceeded", "messages")
    chunks = await collect(vllm_engine, LLMRequest("after", SERVED, prompt="still fine", max_tokens=2, min_tokens=2))
    assert chunks[-1].finish_reason == "length"
