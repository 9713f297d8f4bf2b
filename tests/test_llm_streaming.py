"""SSE wire format, keep-alives, mid-stream failures, disconnects, admission, limits and metering."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from lexia.engines.fakes import FakeLLM
from tests.conftest import bearer
from tests.llm_support import MODEL, LLMAppFactory, TestApp, asgi_post, llm_apps, parse_sse, sdk, service
from tests.test_auth import assert_error

WORDS = " ".join(f"w{i}" for i in range(40))

llm_app = pytest.fixture(llm_apps)


async def usage_rows(api: TestApp, secret: str) -> list[dict[str, object]]:
    """GET /v1/usage after writing the buffered events."""
    await api.services.usage.flush()
    response = await api.client.get("/v1/usage", params={"kind": "llm"}, headers=bearer(secret))
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def test_sse_wire_format(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "  Bonjour  le\nmonde "}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-ratelimit-limit-tokens"]
    assert response.text.endswith("data: [DONE]\n\n")
    assert all(part.startswith("data: ") for part in response.text.split("\n\n") if part)
    events = parse_sse(response.text)
    assert events.data[-1] == "[DONE]"
    chunks = events.chunks
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert deltas == ["Bonjour", " le", " monde"]  # leading spaces kept
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1


async def test_line_separators_inside_tokens_survive(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    content = "ligne\u2028suivante\x85fin\u2029"
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": True, "response_format": {"type": "json_object"}}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parse_sse(response.text).chunks)
    assert json.loads(text) == {"echo": content}


async def test_stream_without_include_usage_has_no_usage_chunk_but_is_metered(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    key, secret = await api.make_key("llm,usage")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "un deux trois"}], "stream": True}
    events = parse_sse((await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))).text)
    assert all(c["choices"] for c in events.chunks)
    rows = await usage_rows(api, secret)
    assert [(r["key_id"], r["requests"], r["input_tokens"], r["output_tokens"]) for r in rows] == [(key.id, 1, 6, 3)]


async def test_keep_alive_comment_when_the_model_is_slow(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, token_delay=0.3))
    service(api).keepalive_seconds = 0.1
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "lent"}], "stream": True}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    events = parse_sse(response.text)
    assert ": keep-alive" in events.comments
    assert response.text.index(": keep-alive") < response.text.index('"content":"lent"')
    assert events.data[-1] == "[DONE]"


async def test_keep_alive_not_sent_when_data_flows(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, token_delay=0.01))
    service(api).keepalive_seconds = 0.2
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}], "stream": True}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert parse_sse(response.text).comments == []


async def test_mid_stream_engine_failure_sends_an_error_frame_then_done(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, fail_after=2))
    _, secret = await api.make_key("llm,usage")
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}], "stream": True}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert events.data[-1] == "[DONE]"
    error = json.loads(events.data[-2])
    assert set(error) == {"error"} and error["error"]["code"] == "internal_error"
    assert error["error"]["type"] == "server_error"
    assert [c["choices"][0]["delta"].get("content") for c in events.chunks[1:-1]] == ["w0", " w1"]
    with pytest.raises(openai.APIError) as caught:  # the SDK surfaces the frame as an error
        stream = await sdk(api, secret).chat.completions.create(model=MODEL, messages=body["messages"], stream=True)  # type: ignore[arg-type]
        async for _ in stream:
            pass
    assert "injected failure" in caught.value.message
    rows = await usage_rows(api, secret)
    assert rows[0]["requests"] == 2 and rows[0]["output_tokens"] == 4


async def test_engine_failure_without_stream_is_an_http_error(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, fail_after=1))
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}]}
    response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert_error(response, 500, "internal_error")


async def test_client_disconnect_aborts_the_engine_and_meters_the_partial_output(llm_app: LLMAppFactory) -> None:
    fake = FakeLLM(MODEL, token_delay=0.02)
    api = await llm_app(fake)
    key, secret = await api.make_key("llm,usage")
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}], "stream": True}
    exchange = await asgi_post(
        api.app, "/v1/chat/completions", body, bearer(secret),
        disconnect_when=lambda seen: seen.count(b"data: ") >= 4,  # role chunk + 3 tokens
    )
    assert exchange.status == 200
    assert b"[DONE]" not in exchange.body
    chunk_id = parse_sse(exchange.body.decode()).chunks[0]["id"]
    assert fake.aborted == [chunk_id]
    assert fake.in_flight() == 0
    rows = await usage_rows(api, secret)
    assert len(rows) == 1 and rows[0]["key_id"] == key.id and rows[0]["requests"] == 1
    assert rows[0]["input_tokens"] == 43
    assert 3 <= int(rows[0]["output_tokens"]) <= 5  # what the engine generated before the abort
    assert service(api).waiting == 0


async def test_503_overloaded_when_max_queued_requests_wait(llm_app: LLMAppFactory) -> None:
    fake = FakeLLM(MODEL, token_delay=0.05, max_running=1)
    api = await llm_app(fake, LEXIA_LLM_MAX_QUEUED="1")
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}], "stream": True}
    running = asyncio.create_task(api.client.post("/v1/chat/completions", json=body, headers=bearer(secret)))
    await asyncio.sleep(0.15)  # the first request holds the engine's only slot and streams
    waiting = asyncio.create_task(api.client.post("/v1/chat/completions", json=body, headers=bearer(secret)))
    for _ in range(100):
        if service(api).waiting == 1:
            break
        await asyncio.sleep(0.01)
    assert service(api).waiting == 1
    refused = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert_error(refused, 503, "overloaded")
    assert int(refused.headers["retry-after"]) >= 1
    metrics = (await api.client.get("/metrics")).text
    assert "lexia_llm_queued 1.0" in metrics
    for task in (running, waiting):
        task.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert fake.in_flight() == 0 and service(api).waiting == 0


async def test_429_tokens_limit_exceeded_when_the_allowance_is_spent(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm", limits={"tokens_per_minute": 50})
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}]}
    first = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "50"
    refused = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
    error = assert_error(refused, 429, "tokens_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    # 43 prompt + 40 output tokens were charged against 50 per minute: about 40 s to recover.
    assert 30 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_token_metrics_count_input_and_output(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a b c"}]}
    for stream in (False, True):
        response = await api.client.post("/v1/chat/completions", json={**body, "stream": stream}, headers=bearer(secret))
        assert response.status_code == 200
    metrics = (await api.client.get("/metrics")).text
    assert f'lexia_llm_tokens_total{{direction="input",model="{MODEL}"}} 12.0' in metrics
    assert f'lexia_llm_tokens_total{{direction="output",model="{MODEL}"}} 6.0' in metrics


async def test_usage_rows_for_streamed_and_non_streamed_requests(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    key, secret = await api.make_key("llm,usage")
    client = sdk(api, secret)
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a b"}])
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "c d e"}], stream=True)
    async for _ in stream:
        pass
    await client.completions.create(model=MODEL, prompt="f g h i")
    bad = await api.client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, headers=bearer(secret))
    assert bad.status_code == 404  # never reached the engine: no llm usage
    rows = await usage_rows(api, secret)
    assert [(r["key_id"], r["kind"], r["requests"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        (key.id, "llm", 3, 5 + 6 + 4, 2 + 3 + 4)
    ]
