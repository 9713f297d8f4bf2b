"""Request fields checked and turned into engine-ready values: 422 with the offending param."""

from __future__ import annotations

import re
from typing import Any

from lexia.errors import ValidationFailed
from lexia.schemas.openai import ChatMessage, NamedToolChoice, ResponseFormat, StreamOptions, Tool

MAX_STOP = 4
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOOL_CHOICES = ("none", "auto", "required")


def choices_n(n: int | None, max_n: int) -> int:
    """`n`, 1 by default, at most LEXIA_LLM_MAX_N."""
    value = 1 if n is None else n
    if value > max_n:
        raise ValidationFailed(f"n must be from 1 to {max_n}", param="n")
    return value


def include_usage(stream: bool, options: StreamOptions | None) -> bool:
    """stream_options.include_usage (stream_options needs stream: true)."""
    if options is not None and not stream:
        raise ValidationFailed("stream_options is only allowed with stream: true", param="stream_options")
    return bool(options and options.include_usage)


def check_min_tokens(min_tokens: int | None, max_tokens: int | None, param: str) -> None:
    """min_tokens must not exceed the output cap."""
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise ValidationFailed(f"min_tokens must not exceed {param}", param="min_tokens")


def tool_options(
    tools: list[Tool] | None, tool_choice: str | NamedToolChoice | None, *, parser: bool
) -> tuple[list[dict[str, Any]] | None, str]:
    """Function tools as dicts and the tool choice as none/auto/required/<function name>."""
    names: list[str] = []
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        if tool.type != "function" or tool.function is None:
            raise ValidationFailed(
                f"tools.{i}: only function tools are supported", param=f"tools.{i}.type"
            )
        fn = tool.function
        if not TOOL_NAME.match(fn.name) or fn.name in names:
            raise ValidationFailed(
                f"tools.{i}.function.name must be 1-64 letters, digits, _ or - and unique",
                param=f"tools.{i}.function.name",
            )
        names.append(fn.name)
        function: dict[str, Any] = {"name": fn.name}
        if fn.description is not None:
            function["description"] = fn.description
        if fn.parameters is not None:
            function["parameters"] = fn.parameters
        if fn.strict is not None:
            function["strict"] = fn.strict
        out.append({"type": "function", "function": function})
    if tool_choice is None:
        choice = "auto" if out else "none"
    elif isinstance(tool_choice, str):
        if tool_choice not in TOOL_CHOICES:
            raise ValidationFailed(
                "tool_choice must be none, auto, required or a function", param="tool_choice"
            )
        choice = tool_choice
    else:
        if tool_choice.type != "function" or tool_choice.function.name not in names:
            raise ValidationFailed(
                "tool_choice names a function that is not in tools", param="tool_choice"
            )
        choice = tool_choice.function.name
    if choice != "none" and not out:
        raise ValidationFailed(f"tool_choice {choice!r} requires tools", param="tool_choice")
    if choice == "auto" and not parser:
        raise ValidationFailed(
            "tool_choice 'auto' needs a tool-call parser (LEXIA_LLM_TOOL_PARSER) on this server; "
            "use 'required', a named function or 'none'",
            param="tool_choice",
        )
    return (out or None), choice


def message_dict(i: int, message: ChatMessage) -> dict[str, Any]:
    """A message as the engine takes it: string content (text parts joined), role rules checked."""
    content = message.content
    if isinstance(content, list):
        parts: list[str] = []
        for j, part in enumerate(content):
            if part.type != "text":
                raise ValidationFailed(
                    f"messages.{i}.content.{j}: content parts of type {part.type!r} are not supported "
                    "by this model (only text)",
                    param=f"messages.{i}.content.{j}.type",
                )
            if part.text is None:
                raise ValidationFailed(
                    f"messages.{i}.content.{j}.text is required", param=f"messages.{i}.content.{j}.text"
                )
            parts.append(part.text)
        text: str | None = "".join(parts)
    else:
        text = content
    role = message.role
    if text is None and not (role == "assistant" and message.tool_calls):
        raise ValidationFailed(f"messages.{i}.content is required for role {role}", param=f"messages.{i}.content")
    if role == "tool" and not message.tool_call_id:
        raise ValidationFailed(
            f"messages.{i}.tool_call_id is required for role tool", param=f"messages.{i}.tool_call_id"
        )
    out: dict[str, Any] = {"role": role, "content": text}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        if role != "assistant":
            raise ValidationFailed(
                f"messages.{i}.tool_calls is only allowed for role assistant", param=f"messages.{i}.tool_calls"
            )
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """`stop` as a tuple of at most 4 non-empty strings."""
    values = [stop] if isinstance(stop, str) else list(stop or ())
    if len(values) > MAX_STOP:
        raise ValidationFailed(f"stop takes at most {MAX_STOP} strings", param="stop")
    if any(value == "" for value in values):
        raise ValidationFailed("stop strings must not be empty", param="stop")
    return tuple(values)


def logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """`logit_bias` with integer token ids."""
    if not bias:
        return None
    out: dict[int, float] = {}
    for key, value in bias.items():
        if not key.isdigit():
            raise ValidationFailed(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
        out[int(key)] = value
    return out


def response_format(value: ResponseFormat | None) -> dict[str, Any] | None:
    """`response_format` as the engine takes it (None for text)."""
    if value is None or value.type == "text":
        return None
    if value.type == "json_object":
        return {"type": "json_object"}
    if value.type == "json_schema":
        spec = value.json_schema
        if spec is None or spec.schema_ is None:
            raise ValidationFailed(
                "response_format json_schema needs json_schema.schema", param="response_format.json_schema"
            )
        return {"type": "json_schema", "name": spec.name, "schema": spec.schema_, "strict": bool(spec.strict)}
    raise ValidationFailed(
        "response_format.type must be text, json_object or json_schema", param="response_format.type"
    )
