"""POST /v1/chat/completions with the FakeLLM, driven by the official OpenAI SDK where it can be."""

from __future__ import annotations

import logging

import openai
import pytest

from lexia.engines.fakes import FakeLLM
from tests.conftest import bearer
from tests.llm_support import MODEL, LLMAppFactory, llm_apps, sdk
from tests.test_auth import assert_error

USER = [{"role": "user", "content": "Bonjour  tout le monde"}]

llm_app = pytest.fixture(llm_apps)


async def test_chat_create_with_the_sdk(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.system_fingerprint == "lexia-1.0.0"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Bonjour tout le monde"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (7, 4, 11)


async def test_chat_stream_with_the_sdk(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    stream = await sdk(api, secret).chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Bonjour tout le monde"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])


async def test_alias_is_accepted_and_the_canonical_id_echoed(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, aliases=("mistralai/Fake-7B",)))
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).chat.completions.create(model="mistralai/Fake-7B", messages=USER)  # type: ignore[arg-type]
    assert completion.model == MODEL


async def test_n_two_gives_two_choices(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    completion = await client.chat.completions.create(model=MODEL, messages=USER, n=2)  # type: ignore[arg-type]
    assert [c.index for c in completion.choices] == [0, 1]
    assert {c.message.content for c in completion.choices} == {"Bonjour tout le monde"}
    assert completion.usage is not None and completion.usage.completion_tokens == 8
    stream = await client.chat.completions.create(model=MODEL, messages=USER, n=2, stream=True)  # type: ignore[arg-type]
    texts: dict[int, str] = {0: "", 1: ""}
    roles = []
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.delta.role:
                roles.append(choice.index)
    assert texts == {0: "Bonjour tout le monde", 1: "Bonjour tout le monde"}
    assert roles == [0, 1]


async def test_stop_strings_cut_the_text(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    completion = await client.chat.completions.create(model=MODEL, messages=USER, stop=["le", "xyz"])  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Bonjour tout "
    assert completion.choices[0].finish_reason == "stop"
    single = await client.chat.completions.create(model=MODEL, messages=USER, stop="tout")  # type: ignore[arg-type]
    assert single.choices[0].message.content == "Bonjour "


async def test_max_completion_tokens_wins_over_max_tokens(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    both = await client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=1, max_completion_tokens=3  # type: ignore[arg-type]
    )
    assert both.choices[0].message.content == "Bonjour tout le"
    assert both.choices[0].finish_reason == "length"
    legacy = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)  # type: ignore[arg-type]
    assert legacy.choices[0].message.content == "Bonjour"


async def test_content_parts_developer_role_and_history(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "premier"},
        {"role": "user", "content": [{"type": "text", "text": "  deux"}, {"type": "text", "text": " parts "}]},
    ]
    completion = await sdk(api, secret).chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "deux parts"
    assert completion.usage is not None and completion.usage.prompt_tokens == (3 + 3) + (1 + 3) + (1 + 3) + (2 + 3)


async def test_logprobs_are_filled_like_openai(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    client = sdk(api, secret)
    completion = await client.chat.completions.create(model=MODEL, messages=USER, logprobs=True, top_logprobs=2)  # type: ignore[arg-type]
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [e.token for e in logprobs.content] == ["Bonjour", " tout", " le", " monde"]
    first = logprobs.content[0]
    assert first.logprob == -0.25 and first.bytes == list(b"Bonjour")
    assert [t.token for t in first.top_logprobs] == ["Bonjour", " lexia"]
    stream = await client.chat.completions.create(model=MODEL, messages=USER, logprobs=True, stream=True)  # type: ignore[arg-type]
    tokens = [e.token async for c in stream for ch in c.choices if ch.logprobs and ch.logprobs.content for e in ch.logprobs.content]
    assert tokens == ["Bonjour", " tout", " le", " monde"]


async def test_sampling_options_and_vllm_extensions_are_accepted(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).chat.completions.create(
        model=MODEL,
        messages=USER,  # type: ignore[arg-type]
        temperature=0.2,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=7,
        logit_bias={"42": 5},
        user="someone",
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 1},
    )
    assert completion.choices[0].finish_reason == "stop"


async def test_unknown_fields_are_ignored_and_logged_once(llm_app: LLMAppFactory, caplog: pytest.LogCaptureFixture) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi", "weight": 1}], "frobnicate": True}
    with caplog.at_level(logging.INFO, logger="lexia.llm"):
        for _ in range(2):
            response = await api.client.post("/v1/chat/completions", json=body, headers=bearer(secret))
            assert response.status_code == 200, response.text
    lines = [r.getMessage() for r in caplog.records if "unknown request field" in r.getMessage()]
    assert len(lines) == 2
    assert any("'frobnicate'" in line for line in lines) and any("messages.*.weight" in line for line in lines)


async def test_unknown_model_is_404_model_not_found(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(api, secret).chat.completions.create(model="gpt-4o", messages=USER, stream=True)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


async def test_context_too_long_is_400_before_streaming(llm_app: LLMAppFactory) -> None:
    api = await llm_app(FakeLLM(MODEL, context_length=32))
    _, secret = await api.make_key("llm")
    messages = [{"role": "user", "content": " ".join(["mot"] * 40)}]
    response = await api.client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": messages, "stream": True}, headers=bearer(secret)
    )
    error = assert_error(response, 400, "context_length_exceeded", "messages")
    assert "32 tokens" in error["message"]
    assert response.headers["content-type"].startswith("application/json")
    small = [{"role": "user", "content": "short"}]
    too_much = await api.client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": small, "max_tokens": 30}, headers=bearer(secret)
    )
    assert_error(too_much, 400, "context_length_exceeded")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages.0.content.0.type"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
        ({"model": 3}, "model"),
    ],
)
async def test_bad_fields_are_422_with_the_param(llm_app: LLMAppFactory, body: dict[str, object], param: str) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    payload = {"model": MODEL, "messages": USER, **body}
    response = await api.client.post("/v1/chat/completions", json=payload, headers=bearer(secret))
    assert_error(response, 422, "validation_error", param)


async def test_body_errors_are_400_413_415(llm_app: LLMAppFactory) -> None:
    api = await llm_app(LEXIA_MAX_JSON_BYTES="200")
    _, secret = await api.make_key("llm")
    headers = {**bearer(secret), "content-type": "application/json"}
    assert_error(await api.client.post("/v1/chat/completions", content=b"{nope", headers=headers), 400, "invalid_json")
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 300}]}
    assert_error(await api.client.post("/v1/chat/completions", json=big, headers=bearer(secret)), 413, "request_too_large")
    text = {**bearer(secret), "content-type": "text/plain"}
    assert_error(await api.client.post("/v1/chat/completions", content=b"hi", headers=text), 415, "unsupported_content_type")


async def test_generation_needs_scope_llm_but_models_do_not(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("stt")
    response = await api.client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER}, headers=bearer(secret))
    error = assert_error(response, 403, "insufficient_scope")
    assert "llm" in error["message"]
    assert_error(await api.client.post("/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=bearer(secret)), 403, "insufficient_scope")
    models = await sdk(api, secret).models.list()
    llm = next(m for m in models.data if m.id == MODEL)
    assert llm.model_extra is not None
    assert llm.model_extra["kind"] == "llm" and llm.model_extra["context_length"] == 4096


async def test_disabled_llm_answers_503_engine_unavailable(llm_app: LLMAppFactory) -> None:
    api = await llm_app(LEXIA_LLM_ENABLED="false")
    _, secret = await api.make_key("llm")
    response = await api.client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER}, headers=bearer(secret))
    assert_error(response, 503, "engine_unavailable")
    assert response.headers["retry-after"]
