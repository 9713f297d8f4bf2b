"""POST /v1/completions (legacy text completions) through the OpenAI SDK and raw HTTP."""

from __future__ import annotations

import pytest

from tests.conftest import bearer
from tests.llm_support import MODEL, LLMAppFactory, llm_apps, parse_sse, sdk
from tests.test_auth import assert_error

llm_app = pytest.fixture(llm_apps)


async def test_completion_create(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).completions.create(model=MODEL, prompt="Once upon a time")
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "Once upon a time"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 4)


async def test_completion_stream_with_usage(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    stream = await sdk(api, secret).completions.create(
        model=MODEL, prompt="Once upon a time", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once upon a time"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


async def test_prompt_array_n_and_echo(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).completions.create(
        model=MODEL, prompt=["un deux", "trois"], n=2, echo=True, max_tokens=1
    )
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "un deuxun", "length"),
        (1, "un deuxun", "length"),
        (2, "troistrois", "stop"),
        (3, "troistrois", "stop"),
    ]
    assert completion.usage is not None and completion.usage.prompt_tokens == 3


async def test_stream_of_several_prompts_keeps_choice_indexes(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "prompt": ["a b", "c"], "stream": True, "echo": True}
    events = parse_sse((await api.client.post("/v1/completions", json=body, headers=bearer(secret))).text)
    texts: dict[int, str] = {}
    for chunk in events.chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "a ba b", 1: "cc"}
    assert events.data[-1] == "[DONE]"


async def test_completion_logprobs(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    completion = await sdk(api, secret).completions.create(model=MODEL, prompt="a bb", logprobs=2, echo=True)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == ["a", " bb"]
    assert logprobs.token_logprobs == [-0.25, -0.25]
    assert logprobs.top_logprobs == [{"a": -0.25, " lexia": -2.0}, {" bb": -0.25, " lexia": -2.0}]
    assert logprobs.text_offset == [4, 5]  # after the echoed prompt


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": None, "messages": [{"role": "user", "content": "hi"}]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "stop": [""]}, "stop"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
async def test_bad_completion_requests_are_422(llm_app: LLMAppFactory, body: dict[str, object], param: str) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    payload = {"model": MODEL, **{k: v for k, v in body.items() if v is not None}}
    response = await api.client.post("/v1/completions", json=payload, headers=bearer(secret))
    error = assert_error(response, 422, "validation_error", param)
    if "messages" in body:
        assert "/v1/chat/completions" in error["message"]


async def test_completion_context_too_long_is_400(llm_app: LLMAppFactory) -> None:
    api = await llm_app()
    _, secret = await api.make_key("llm")
    body = {"model": MODEL, "prompt": "mot " * 5000, "stream": True}
    response = await api.client.post("/v1/completions", json=body, headers=bearer(secret))
    assert_error(response, 400, "context_length_exceeded", "prompt")
