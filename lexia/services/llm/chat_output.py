"""OpenAI response shapes: chat.completion(.chunk) and text_completion objects and SSE frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from lexia.engines.base import LLMChunk, TokenLogprob
from lexia.settings import VERSION

FINGERPRINT = f"lexia-{VERSION}"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})
DONE = b"data: [DONE]\n\n"
KEEPALIVE_FRAME = b": keep-alive\n\n"
_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class Shape:
    """What every response object of one call shares."""

    kind: Literal["chat", "text"]
    id: str
    model: str
    created: int
    choices: int  # total choices: prompts x n
    n: int
    echo: tuple[str, ...] = ()  # completions with echo: the prompt of each engine stream
    include_usage: bool = False


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The OpenAI usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(reason: str | None) -> str | None:
    """An engine finish reason as OpenAI names it (anything unknown ends as "stop")."""
    if reason is None or reason in FINISH_REASONS:
        return reason
    return "stop"


def _token_bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", "replace"))


def chat_logprob(entry: TokenLogprob) -> dict[str, Any]:
    """One `choices[].logprobs.content[]` item."""
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": entry.bytes if entry.bytes is not None else _token_bytes(entry.token),
        "top_logprobs": [
            {"token": token, "logprob": logprob, "bytes": _token_bytes(token)} for token, logprob in entry.top
        ],
    }


@dataclass(slots=True)
class ChoiceState:
    """One choice as it accumulates: text, tool calls, logprobs, finish reason."""

    text: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, chunk: LLMChunk) -> None:
        """Fold a chunk in."""
        self.text += chunk.text
        self.logprobs.extend(chunk.logprobs)
        for delta in chunk.tool_calls:
            call = self.tool_calls.setdefault(
                delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if delta.id is not None:
                call["id"] = delta.id
            if delta.name is not None:
                call["function"]["name"] += delta.name
            call["function"]["arguments"] += delta.arguments
        if chunk.finish_reason is not None:
            self.finish_reason = finish_reason(chunk.finish_reason)


def has_output(chunk: LLMChunk) -> bool:
    """True if a chunk carries anything a client sees."""
    return bool(chunk.text or chunk.tool_calls or chunk.logprobs or chunk.finish_reason is not None)


class Output:
    """Builds the final object and the SSE frames of one call."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        chunk_object = "chat.completion.chunk" if shape.kind == "chat" else "text_completion"
        head = (
            f'{{"id":{_encode(shape.id).decode()},"object":"{chunk_object}","created":{shape.created},'
            f'"model":{_encode(shape.model).decode()},"system_fingerprint":"{FINGERPRINT}","choices":['
        )
        self._head = b"data: " + head.encode()
        self._tail = b'],"usage":null}\n\n'
        self._offsets = [len(shape.echo[i // shape.n]) if shape.echo else 0 for i in range(shape.choices)]

    def choice_index(self, slot: int, chunk: LLMChunk) -> int:
        """The response's choice index of a chunk from engine stream `slot`."""
        return slot * self.shape.n + chunk.index

    # -- streaming ---------------------------------------------------------------------

    def _frame(self, choice: dict[str, Any]) -> bytes:
        return self._head + _encode(choice) + self._tail

    def opening(self) -> bytes:
        """The first frames: the assistant role of every chat choice, or echoed prompts."""
        frames: list[bytes] = []
        for index in range(self.shape.choices):
            if self.shape.kind == "chat":
                delta = {"role": "assistant", "content": ""}
                frames.append(self._frame({"index": index, "delta": delta, "logprobs": None, "finish_reason": None}))
            elif self.shape.echo:
                text = self.shape.echo[index // self.shape.n]
                frames.append(self._frame({"index": index, "text": text, "logprobs": None, "finish_reason": None}))
        return b"".join(frames)

    def frame(self, index: int, chunk: LLMChunk) -> bytes:
        """The SSE frame of one engine chunk (b"" when it carries nothing visible)."""
        if not has_output(chunk):
            return b""
        reason = finish_reason(chunk.finish_reason)
        if self.shape.kind == "chat":
            delta: dict[str, Any] = {}
            if chunk.text or (chunk.logprobs and not chunk.tool_calls):
                delta["content"] = chunk.text
            if chunk.tool_calls:
                delta["tool_calls"] = [_tool_delta(d.index, d.id, d.name, d.arguments) for d in chunk.tool_calls]
            logprobs = _chat_logprobs(chunk.logprobs)
            return self._frame({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason})
        text_logprobs = self._text_logprobs(index, chunk.logprobs) if chunk.logprobs else None
        self._offsets[index] += len(chunk.text) if not chunk.logprobs else 0
        return self._frame({"index": index, "text": chunk.text, "logprobs": text_logprobs, "finish_reason": reason})

    def _text_logprobs(self, index: int, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        offsets: list[int] = []
        for entry in entries:
            offsets.append(self._offsets[index])
            self._offsets[index] += len(entry.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries],
            "text_offset": offsets,
        }

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage chunk (when asked for) and [DONE]."""
        if not self.shape.include_usage:
            return DONE
        usage = _encode(usage_object(prompt_tokens, completion_tokens))
        return self._head + b'],"usage":' + usage + b"}\n\n" + DONE

    @staticmethod
    def error_frame(body: dict[str, Any]) -> bytes:
        """An error inside a started stream, followed by [DONE]."""
        return b"data: " + _encode(body) + b"\n\n" + DONE

    # -- aggregated ----------------------------------------------------------------------

    def completion(self, choices: list[ChoiceState], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The chat.completion or text_completion object."""
        shape = self.shape
        if shape.kind == "chat":
            items = [_chat_choice(i, c) for i, c in enumerate(choices)]
            obj = "chat.completion"
        else:
            items = []
            for i, c in enumerate(choices):
                prefix = shape.echo[i // shape.n] if shape.echo else ""
                self._offsets[i] = len(prefix)
                logprobs = self._text_logprobs(i, c.logprobs) if c.logprobs else None
                text = prefix + c.text
                items.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason})
            obj = "text_completion"
        return {
            "id": shape.id,
            "object": obj,
            "created": shape.created,
            "model": shape.model,
            "choices": items,
            "usage": usage_object(prompt_tokens, completion_tokens),
            "system_fingerprint": FINGERPRINT,
        }


def _tool_delta(index: int, call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    if call_id is None and name is None:
        return {"index": index, "function": {"arguments": arguments}}
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name or "", "arguments": arguments},
    }


def _chat_choice(index: int, choice: ChoiceState) -> dict[str, Any]:
    calls = [choice.tool_calls[k] for k in sorted(choice.tool_calls)] or None
    message = {
        "role": "assistant",
        "content": None if calls and not choice.text else choice.text,
        "refusal": None,
        "tool_calls": calls,
    }
    logprobs = _chat_logprobs(choice.logprobs)
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": choice.finish_reason}


def _chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
    if not entries:
        return None
    return {"content": [chat_logprob(e) for e in entries], "refusal": None}
