"""OpenAI Chat Completions and Completions request bodies (unknown fields tolerated)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Positive = Annotated[int, Meta(ge=1)]
# A signed 64-bit integer, as vLLM's own OpenAI server takes `seed` (torch refuses larger seeds).
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Role = Literal["system", "developer", "user", "assistant", "tool"]


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a message content array; only `text` parts are served."""

    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct, kw_only=True):
    """A function name with its JSON arguments (as a string) in an assistant message."""

    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, kw_only=True):
    """A tool call carried by an assistant message of the history."""

    id: str
    type: str = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    """A message of any role; role-specific rules are checked by the chat service."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    """The function of a tool."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, kw_only=True):
    """A tool offered to the model (only `function` tools are served)."""

    type: str
    function: FunctionDefinition | None = None


class ToolChoiceFunction(msgspec.Struct, kw_only=True):
    """The name of a forced function."""

    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """tool_choice forcing one function."""

    type: str
    function: ToolChoiceFunction


class JSONSchemaFormat(msgspec.Struct, kw_only=True):
    """The `json_schema` member of response_format."""

    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = msgspec.field(default=None, name="schema")
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    """response_format: text, json_object or json_schema."""

    type: str
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    """stream_options."""

    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """POST /v1/chat/completions (API.md §3.2), fields in OpenAI's order, then vLLM's."""

    model: str
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    max_completion_tokens: Positive | None = None
    max_tokens: Positive | None = None
    n: Positive | None = None
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=2)] | None = None
    min_tokens: Annotated[int, Meta(ge=0)] | None = None


class CompletionRequest(msgspec.Struct, kw_only=True):
    """POST /v1/completions (API.md §3.3)."""

    model: str
    prompt: str | list[str] | None = None
    echo: bool | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100, le=100)]] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    max_tokens: Positive | None = None
    n: Positive | None = None
    presence_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    user: str | None = None
    top_k: Annotated[int, Meta(ge=-1)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=2)] | None = None
    min_tokens: Annotated[int, Meta(ge=0)] | None = None


_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])
_MESSAGES = msgspec.json.Decoder(list[dict[str, msgspec.Raw]])


def unknown_fields(body: bytes, kind: type[msgspec.Struct]) -> list[str]:
    """Top-level and per-message field names of a JSON body that `kind` does not declare.

    Values are not parsed (msgspec.Raw), so this costs a scan of the body, not a second decode.
    """
    try:
        top = _TOP_LEVEL.decode(body)
    except msgspec.DecodeError:
        return []
    known = set(kind.__struct_encode_fields__)
    names = [name for name in top if name not in known]
    if kind is ChatCompletionRequest and "messages" in top:
        message_fields = set(ChatMessage.__struct_encode_fields__)
        try:
            messages = _MESSAGES.decode(top["messages"])
        except msgspec.DecodeError:
            messages = []
        for message in messages:
            names += [f"messages.*.{name}" for name in message if name not in message_fields]
    return list(dict.fromkeys(names))


# -- responses (what the routes answer; the chat service writes these shapes directly) -----------


class CompletionUsage(msgspec.Struct, kw_only=True):
    """Tokens of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(msgspec.Struct, kw_only=True):
    """The generated message of a chat choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    """One choice of a chat.completion."""

    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A chat.completion (with `stream: true`: an SSE stream of chat.completion.chunk objects, then [DONE])."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: str


class TextChoice(msgspec.Struct, kw_only=True):
    """One choice of a text_completion."""

    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class TextCompletion(msgspec.Struct, kw_only=True):
    """A text_completion (with `stream: true`: an SSE stream of text_completion chunks, then [DONE])."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage
    system_fingerprint: str
